# ADM on the synthetic shapes, a tiny pixel-space pair: 800 steps take about 4 minutes on
# 2 CPU cores (OMP_NUM_THREADS=1).
#   accelerate launch tasks/diffusion/train.py configs/diffusion/adm_shapes_tiny.py
# Online ADM (teacher and student from scratch, the method's own setting). For offline ADM
# give a trained teacher: --teacher_model_name_or_path DIR (frozen, online=False).
resolution = 16


def _unet(channels, layers_per_block):
    return dict(type='UNet2DModel', sample_size=resolution, in_channels=3, out_channels=3,
                block_out_channels=channels, layers_per_block=layers_per_block,
                down_block_types=('DownBlock2D', 'DownBlock2D'),
                up_block_types=('UpBlock2D', 'UpBlock2D'), norm_num_groups=8)


teacher = _unet((32, 64), 2)
student = _unet((16, 32), 1)  # half the channels, fewer layers per block
del _unet  # keep the config free of functions (mmengine dumps it)

noise_scheduler = dict(type='DDPMScheduler', num_train_timesteps=1000,
                       beta_schedule='linear', prediction_type='epsilon')

distiller = dict(
    type='ADM', online=True,
    # down_blocks.i return (hidden, residuals): index 0 is the feature map
    taps=[dict(student='down_blocks.1', teacher='down_blocks.1', index=0),
          dict(student='mid_block', teacher='mid_block')],
    # weights, temperature, tau and warm-up: the ADM class's (co=0.1, di=0.01, 30 % warm-up),
    # the ones measured on Fashion-MNIST (README, Diffusion > Results on Fashion-MNIST): there
    # online ADM denoised worse than plain output matching (co=di=0) on both networks;
    # output matching: --cfg-options distiller.loss_weights.co=0 distiller.loss_weights.di=0
)

data = dict(type='shapes', resolution=resolution, num_samples=2048, num_heldout=64, seed=0,
            random_flip=True)

train_batch_size = 16
max_train_steps = 800
learning_rate = 1e-3
lr_scheduler = 'cosine'
lr_warmup_steps = 50
ema_max_decay = 0.999
checkpointing_steps = 400
checkpoints_total_limit = 2
validation_steps = 400
num_validation_images = 8
num_inference_steps = 20
logging_steps = 50
output_dir = 'work_dirs/adm_shapes_tiny'
evaluation = dict(num_images=64, num_buckets=4, num_samples=16, num_inference_steps=20)
