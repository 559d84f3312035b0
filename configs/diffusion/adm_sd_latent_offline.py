# Offline ADM for a Stable-Diffusion-style latent UNet2DConditionModel teacher, given as a local
# diffusers directory (nothing is downloaded): the teacher is frozen (cast to the
# --mixed_precision dtype), the student is a smaller UNet trained from scratch on the teacher's
# latent space. Needs a GPU and your images:
#   accelerate launch tasks/diffusion/train.py configs/diffusion/adm_sd_latent_offline.py \
#       --cfg-options teacher.pretrained=$SD vae.pretrained=$SD noise_scheduler.pretrained=$SD \
#       --train_data_dir /path/to/images --mixed_precision fp16 --output_dir work_dirs/adm_sd
# Training is unconditional (images without captions): every image gets the same
# encoder_hidden_states, the teacher's empty-prompt embedding, computed once with its text
# encoder (transformers) and saved as a tensor (1, 77, 768):
#   ids = tokenizer([''], padding='max_length', max_length=77, return_tensors='pt').input_ids
#   torch.save(text_encoder(ids)[0], 'empty_prompt.pt')
# and given as conditioning.embeddings (without it, zeros are used).
sd_dir = '/path/to/stable-diffusion-v1-5'  # a local copy: unet/, vae/, scheduler/ (edit, or
# override the three paths with --cfg-options as above)
resolution = 512  # images; latents are resolution / 8

teacher = dict(type='UNet2DConditionModel', pretrained=sd_dir, subfolder='unet')
# SD 1.x's UNet with half the channels and one layer per block: 148M parameters against 860M
student = dict(type='UNet2DConditionModel', sample_size=resolution // 8, in_channels=4,
               out_channels=4, block_out_channels=(160, 320, 640, 640), layers_per_block=1,
               down_block_types=('CrossAttnDownBlock2D', 'CrossAttnDownBlock2D',
                                 'CrossAttnDownBlock2D', 'DownBlock2D'),
               up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D',
                               'CrossAttnUpBlock2D'),
               cross_attention_dim=768, attention_head_dim=8)
vae = dict(pretrained=sd_dir, subfolder='vae')
noise_scheduler = dict(type='DDPMScheduler', pretrained=sd_dir, subfolder='scheduler')
conditioning = dict(embeddings=None, sequence_length=77)

distiller = dict(
    type='ADM', online=False,
    taps=[dict(student='down_blocks.2', teacher='down_blocks.2', index=0),
          dict(student='mid_block', teacher='mid_block')],
    # weights, temperature, tau and warm-up: the ADM class's (co=0.1, 30 % warm-up; di does not
    # act offline), the ones measured offline on Fashion-MNIST (README, Diffusion > Results)
)

data = dict(type='folder', resolution=resolution, center_crop=True, random_flip=True,
            num_heldout=64)

train_batch_size = 8
gradient_accumulation_steps = 4
max_train_steps = 50000
learning_rate = 1e-4
lr_scheduler = 'constant_with_warmup'
lr_warmup_steps = 1000
ema_max_decay = 0.9999
checkpointing_steps = 2000
checkpoints_total_limit = 3
validation_steps = 2000
num_validation_images = 4
num_inference_steps = 30
output_dir = 'work_dirs/adm_sd_latent_offline'
evaluation = dict(num_images=64, num_buckets=4, num_samples=16, num_inference_steps=30)
