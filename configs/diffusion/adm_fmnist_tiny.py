# ADM on Fashion-MNIST garments (the Debian package dataset-fashion-mnist), unconditional DDPM
# at 32x32 grey, the shapes-size pair (teacher (32, 64) x2 layers, student (16, 32) x1): the cpu
# preset of benchmarks/diffusion_real.py, which measures it against the student alone and
# output matching (README, Diffusion).
#   accelerate launch tasks/diffusion/train.py configs/diffusion/adm_fmnist_tiny.py
# Offline ADM: --teacher_model_name_or_path DIR (a trained UNet folder; frozen, online=False).
_base_ = ['adm_shapes_tiny.py']
resolution = 32


def _unet(channels, layers_per_block):
    return dict(type='UNet2DModel', sample_size=resolution, in_channels=1, out_channels=1,
                block_out_channels=channels, layers_per_block=layers_per_block,
                down_block_types=('DownBlock2D', 'DownBlock2D'),
                up_block_types=('UpBlock2D', 'UpBlock2D'), norm_num_groups=8)


teacher = _unet((32, 64), 2)
student = _unet((16, 32), 1)
del _unet

# ADM as its class defaults it (co=0.1, di=0.01, 30 % warm-up; README, "ADM as implemented"),
# not adm_shapes_tiny.py's unmeasured di=0.1 without warm-up
distiller = dict(loss_weights=dict(di=0.01), warmup=0.3)

data = dict(_delete_=True, type='fmnist', resolution=resolution, channels=1, num_samples=20000,
            num_heldout=1000, random_flip=True)
output_dir = 'work_dirs/adm_fmnist_tiny'
evaluation = dict(num_images=1000)  # denoising MSE on 1000 held-out garments
