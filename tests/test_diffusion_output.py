"""The output folder of a diffusion run: what diffusers users load with from_pretrained."""
import json

import pytest

pytest.importorskip('diffusers')


def tiny_unet(channels=(8, 16), in_channels=3):
    from diffusers import UNet2DModel
    return UNet2DModel(sample_size=8, in_channels=in_channels, out_channels=in_channels,
                       block_out_channels=channels, layers_per_block=1, norm_num_groups=4,
                       down_block_types=('DownBlock2D', 'DownBlock2D'),
                       up_block_types=('UpBlock2D', 'UpBlock2D'))


def test_latent_student_of_a_pipeline_folder_becomes_that_pipeline(tmp_path):
    """vae.pretrained is a pipeline folder (model_index.json): the output is that pipeline
    with the student as its unet and the run's scheduler, saved whole."""
    from diffusers import DDIMScheduler, DDPMScheduler, LDMPipeline, VQModel

    from distill.engines.diffusion.output import save_student_pipeline
    vqvae = VQModel(in_channels=3, out_channels=3, latent_channels=3, block_out_channels=(8,),
                    norm_num_groups=4, num_vq_embeddings=16)
    LDMPipeline(vqvae=vqvae, unet=tiny_unet((16, 32)), scheduler=DDIMScheduler()
                ).save_pretrained(tmp_path / 'teacher_pipeline')
    student = tiny_unet((8, 16))
    written = save_student_pipeline(tmp_path / 'out', student,
                                    DDPMScheduler(num_train_timesteps=100), latent=True,
                                    vae_dir=tmp_path / 'teacher_pipeline')
    assert written == 'LDMPipeline'
    index = json.loads((tmp_path / 'out' / 'model_index.json').read_text())
    assert index['_class_name'] == 'LDMPipeline' and index['scheduler'][1] == 'DDPMScheduler'
    pipeline = LDMPipeline.from_pretrained(tmp_path / 'out')
    assert tuple(pipeline.unet.config.block_out_channels) == (8, 16)  # the student
    assert pipeline.scheduler.config.num_train_timesteps == 100
    assert (tmp_path / 'out' / 'vqvae' / 'config.json').is_file()


def test_latent_student_of_a_bare_vae_folder_gets_unet_and_scheduler(tmp_path):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DModel

    from distill.engines.diffusion.output import save_student_pipeline
    AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=4
                  ).save_pretrained(tmp_path / 'vae')
    written = save_student_pipeline(tmp_path / 'out', tiny_unet(in_channels=4), DDPMScheduler(),
                                    latent=True, vae_dir=tmp_path / 'vae')
    assert written is None and not (tmp_path / 'out' / 'model_index.json').exists()
    assert UNet2DModel.from_pretrained(tmp_path / 'out' / 'unet').config.in_channels == 4
    assert (tmp_path / 'out' / 'scheduler' / 'scheduler_config.json').is_file()
