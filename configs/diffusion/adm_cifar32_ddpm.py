# ADM on 32x32 pixel-space images, for users with data and a GPU:
#   accelerate launch tasks/diffusion/train.py configs/diffusion/adm_cifar32_ddpm.py \
#       --train_data_dir /path/to/images --mixed_precision fp16 --output_dir work_dirs/adm32
# Teacher: the UNet of DDPM-CIFAR10 (Ho et al.; google/ddpm-cifar10-32 in diffusers: 128-256
# channels, 2 layers per block, attention at 16x16, 35.7M parameters). Online by default; with
# a trained teacher pass --teacher_model_name_or_path DIR (frozen, offline ADM).
# Student: half the channels, one layer per block (6.1M parameters against 35.7M).
resolution = 32

teacher = dict(type='UNet2DModel', sample_size=resolution, in_channels=3, out_channels=3,
               block_out_channels=(128, 256, 256, 256), layers_per_block=2,
               down_block_types=('DownBlock2D', 'AttnDownBlock2D', 'DownBlock2D',
                                 'DownBlock2D'),
               up_block_types=('UpBlock2D', 'UpBlock2D', 'AttnUpBlock2D', 'UpBlock2D'),
               attention_head_dim=None, norm_num_groups=32, dropout=0.1)
student = dict(type='UNet2DModel', sample_size=resolution, in_channels=3, out_channels=3,
               block_out_channels=(64, 128, 128, 128), layers_per_block=1,
               down_block_types=('DownBlock2D', 'AttnDownBlock2D', 'DownBlock2D',
                                 'DownBlock2D'),
               up_block_types=('UpBlock2D', 'UpBlock2D', 'AttnUpBlock2D', 'UpBlock2D'),
               attention_head_dim=None, norm_num_groups=32, dropout=0.1)

noise_scheduler = dict(type='DDPMScheduler', num_train_timesteps=1000,
                       beta_schedule='linear', prediction_type='epsilon')

distiller = dict(
    type='ADM', online=True,
    # down_blocks.1 ends at 8x8 (stride 4), down_blocks.2 and mid_block at 4x4 (stride 8);
    # taps='auto' would pair the decoder's last blocks at strides 2, 4 and 8 instead
    taps=[dict(student='down_blocks.1', teacher='down_blocks.1', index=0),
          dict(student='down_blocks.2', teacher='down_blocks.2', index=0),
          dict(student='mid_block', teacher='mid_block')],
    # weights, temperature, tau and warm-up: the ADM class's (co=0.1, di=0.01, 30 % warm-up),
    # the ones measured on Fashion-MNIST (README, Diffusion > Results on Fashion-MNIST): there
    # online ADM denoised worse than plain output matching (co=di=0) on both networks;
    # output matching: --cfg-options distiller.loss_weights.co=0 distiller.loss_weights.di=0
)

# without --train_data_dir the synthetic shapes are used (a smoke test, not CIFAR)
data = dict(type='shapes', resolution=resolution, num_samples=50000, num_heldout=1000,
            random_flip=True)

train_batch_size = 128
max_train_steps = 200000
learning_rate = 2e-4
lr_scheduler = 'constant_with_warmup'
lr_warmup_steps = 5000
ema_max_decay = 0.9999
checkpointing_steps = 5000
checkpoints_total_limit = 3
validation_steps = 5000
num_validation_images = 16
num_inference_steps = 50
output_dir = 'work_dirs/adm_cifar32_ddpm'
evaluation = dict(num_images=1000, num_buckets=4, num_samples=1000, num_inference_steps=50,
                  inception_weights=None)  # a local pt_inception-2015-12-05 file enables FID
