# ADM on Fashion-MNIST garments (the Debian package dataset-fashion-mnist), unconditional DDPM
# at 32x32 grey, the shapes-size pair (teacher (32, 64) x2 layers, student (16, 32) x1): the cpu
# preset of benchmarks/diffusion_real.py, which measures it against the student alone and
# output matching (README, Diffusion).
#   accelerate launch tasks/diffusion/train.py configs/diffusion/adm_fmnist_tiny.py
# Offline ADM: --teacher_model_name_or_path DIR (a trained UNet folder; frozen, online=False).
_base_ = ['adm_shapes_tiny.py']
resolution = 32


# the base's UNets at 32x32 grey (merged into its dicts: channels and layers as there)
teacher = dict(sample_size=resolution, in_channels=1, out_channels=1)
student = dict(sample_size=resolution, in_channels=1, out_channels=1)

data = dict(_delete_=True, type='fmnist', resolution=resolution, channels=1, num_samples=20000,
            num_heldout=1000, random_flip=True)
output_dir = 'work_dirs/adm_fmnist_tiny'
evaluation = dict(num_images=1000)  # denoising MSE on 1000 held-out garments
