"""Every shipped diffusion config trains two steps, validates and evaluates, through
``tasks/diffusion/train.py``, with the UNets and method it names: the generated shapes, stand-in
Fashion-MNIST idx files, and for the latent config a folder of images and a stand-in local
diffusers directory (``unet/``, ``vae/``, ``scheduler/``) given as its command shows (README,
"Diffusion (diffusers UNets)").

A new config is covered by being added; sizes are cut by a wrapper config only.
"""
from __future__ import annotations

import json

import pytest
from mmengine.config import Config

from config_runs import config_id, run_entry_point, shipped_configs, write_wrapper
from fmnist_helpers import write_fmnist
from standins import write_diffusers_dir, write_image_folder

pytestmark = pytest.mark.end_to_end

pytest.importorskip('diffusers')

CONFIGS = shipped_configs('diffusion')

SHORT_RUN = """
train_batch_size = 2
gradient_accumulation_steps = 1
max_train_steps = 2
lr_warmup_steps = 0
checkpointing_steps = 2
validation_steps = 2
num_validation_images = 1
num_inference_steps = 2
logging_steps = 1
report_to = 'none'
evaluation = dict(num_images=4, num_buckets=2, num_samples=2, num_inference_steps=2)
"""


def latent_setup(tmp_path, cfg) -> tuple[str, list]:
    """A local diffusers directory whose UNet fits the config's student (its cross-attention
    width and block types), images in a folder, and the wrapper lines pointing at them."""
    student = cfg.student
    sd_dir = write_diffusers_dir(tmp_path / 'sd', unet=dict(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 16, 16, 16),
        layers_per_block=1, norm_num_groups=8, down_block_types=student.down_block_types,
        up_block_types=student.up_block_types, attention_head_dim=4,
        cross_attention_dim=student.cross_attention_dim))
    images = write_image_folder(tmp_path / 'images', classes=('',), per_class=6, size=(136, 144),
                                suffix='.png')
    body = (f"teacher = dict(pretrained={str(sd_dir)!r})\n"
            f"vae = dict(pretrained={str(sd_dir)!r})\n"
            f"noise_scheduler = dict(pretrained={str(sd_dir)!r})\n"
            # latents of 16x16 through the stand-in VAE's 8x downsampling: down_blocks.2, the
            # config's tap, then ends at 2x2
            "resolution = 128\n"
            "student = dict(sample_size=16)\n"
            "data = dict(resolution=128, num_heldout=2)\n")
    return body, ['--train_data_dir', str(images)]


@pytest.mark.parametrize('config', CONFIGS, ids=[config_id(p) for p in CONFIGS])
def test_shipped_config_trains_and_evaluates(config, tmp_path):
    cfg = Config.fromfile(str(config))
    flags = []
    if cfg.data.get('type') == 'folder':
        body, flags = latent_setup(tmp_path, cfg)
    elif cfg.data.get('type') == 'fmnist':
        root = tmp_path / 'fmnist'
        root.mkdir()
        write_fmnist(root, train=8, test=4)
        body = f"data = dict(root={str(root)!r}, num_samples=8, num_heldout=4)\n"
    else:
        body = "data = dict(num_samples=8, num_heldout=4)\n"
    wrapper = write_wrapper(tmp_path, config, body + SHORT_RUN)
    output = run_entry_point('diffusion', wrapper, tmp_path, '--output_dir',
                             str(tmp_path / 'out'), *flags)
    records = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
    final = [r for r in records if r['kind'] == 'final']
    assert final and final[-1]['global_step'] == 2, output[-3000:]
    assert final[-1]['student_denoising_mse']['mean'] > 0, final
    assert (tmp_path / 'out' / 'unet' / 'config.json').is_file(), output[-3000:]
