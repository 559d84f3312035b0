# How a run executes; none of these change the method.
train = dict(
    seed=0,                        # seeds initial weights, shuffle order and augmentation
    mixed_precision='no',          # 'no', 'fp16' or 'bf16' (Accelerate's autocast + scaler)
    gradient_accumulation_steps=1,  # batches per optimiser step (gradients averaged)
    log_interval=50,               # steps between TensorBoard step scalars (train/<term>)
    find_unused_parameters=False,  # DDP's flag, for distillers with parameters a step skips
    grad_clip=None,                # max global gradient norm, or None for no clipping
    keep_checkpoints=3,            # checkpoint-N folders kept (newest); 0 keeps all
    progress_bar=True,             # a tqdm bar per epoch on the main process
    cpu=False,                     # force the CPU even when a GPU is visible
    check_finite='step',           # weights/buffers checked finite after every optimiser
                                   # step ('step') or only before each checkpoint ('epoch')
)
# where checkpoints, metrics.json, train.log and tensorboard/ go; --work-dir overrides it,
# and None means work_dirs/<config name>
work_dir = None
