"""tasks/diffusion/train.py's flags (those of diffusers' train_unconditional.py that apply) and
the DDP gradient-stride fix, without a training run."""
import pytest
import torch

from test_diffusion_train import BASE

pytest.importorskip('diffusers')


def config(*flags):
    from distill.engines.diffusion.config import build_parser, load_config
    return load_config(build_parser().parse_args([str(BASE), *flags]))


def test_train_unconditional_flags_map_to_the_config():
    cfg = config('--resolution', '24', '--num_epochs', '3', '--dataloader_num_workers', '2',
                 '--logging_dir', 'tb', '--no-use_ema', '--no-random_flip', '--logger', 'none',
                 '--prediction_type', 'v_prediction', '--ddpm_num_steps', '200',
                 '--ddpm_beta_schedule', 'squaredcos_cap_v2', '--ddpm_num_inference_steps', '7',
                 '--adam_beta1', '0.9', '--adam_beta2', '0.99', '--adam_weight_decay', '0.01',
                 '--adam_epsilon', '1e-6', '--ema_inv_gamma', '2', '--ema_power', '0.5',
                 '--ema_max_decay', '0.99', '--local_rank', '0')
    assert cfg.data.resolution == 24
    assert cfg.student.sample_size == cfg.teacher.sample_size == 24
    assert (cfg.num_epochs, cfg.dataloader_num_workers, cfg.logging_dir) == (3, 2, 'tb')
    assert cfg.use_ema is False and cfg.data.random_flip is False and cfg.report_to == 'none'
    assert cfg.noise_scheduler.prediction_type == 'v_prediction'
    assert cfg.noise_scheduler.num_train_timesteps == 200
    assert cfg.noise_scheduler.beta_schedule == 'squaredcos_cap_v2'
    assert cfg.num_inference_steps == 7
    assert (cfg.adam_beta1, cfg.adam_beta2, cfg.adam_weight_decay, cfg.adam_epsilon) == (
        0.9, 0.99, 0.01, 1e-6)
    assert (cfg.ema_inv_gamma, cfg.ema_power, cfg.ema_max_decay) == (2.0, 0.5, 0.99)
    assert config('--use_ema').use_ema is True and config().num_epochs is None
    with pytest.raises(ValueError, match='not both'):
        config('--num_epochs', '1', '--max_train_steps', '5')


def test_more_flags_of_diffusers_examples(tmp_path, caplog):
    """--center_crop, --eval_batch_size, --save_images_epochs, --save_model_epochs,
    --model_config_name_or_path and --cache_dir are taken; --dataset_name is refused saying
    what to give instead."""
    from diffusers import UNet2DModel
    from distill.config_checks import ConfigError
    UNet2DModel(sample_size=8, block_out_channels=(8, 16), norm_num_groups=4,
                layers_per_block=1, down_block_types=('DownBlock2D', 'DownBlock2D'),
                up_block_types=('UpBlock2D', 'UpBlock2D')).save_config(tmp_path / 'arch')
    with caplog.at_level('WARNING'):
        cfg = config('--center_crop', '--eval_batch_size', '5', '--save_images_epochs', '2',
                     '--save_model_epochs', '3', '--model_config_name_or_path',
                     str(tmp_path / 'arch'), '--cache_dir', str(tmp_path),
                     '--logging_steps', '7')
    assert cfg.data.center_crop is True and cfg.num_validation_images == 5
    assert (cfg.validation_epochs, cfg.checkpointing_epochs, cfg.logging_steps) == (2, 3, 7)
    assert cfg.student.type == 'UNet2DModel' and cfg.student.block_out_channels == [8, 16]
    assert '--cache_dir changes nothing' in caplog.text
    with pytest.raises(ConfigError, match='--dataset_name downloads.*--train_data_dir'):
        config('--dataset_name', 'huggan/flowers-102-categories')


def test_resolution_leaves_a_pretrained_teacher_alone(tmp_path):
    from diffusers import UNet2DModel
    UNet2DModel(sample_size=16, block_out_channels=(8, 16), norm_num_groups=4,
                down_block_types=('DownBlock2D', 'DownBlock2D'),
                up_block_types=('UpBlock2D', 'UpBlock2D')).save_pretrained(tmp_path / 't')
    cfg = config('--resolution', '32', '--teacher_model_name_or_path', str(tmp_path / 't'))
    assert cfg.student.sample_size == 32 and 'sample_size' not in cfg.teacher


def test_grad_of_1x1_conv_keeps_the_parameter_strides():
    """A 1x1 conv on a channels-last-strided input (a UNet attention block's output) gets a
    weight gradient with strides DDP's reducer reports; the hook gives it the weight's."""
    from distill.engines.diffusion.grad_strides import standard_grad_strides
    conv = torch.nn.Conv2d(32, 64, 1, bias=False)
    x = torch.randn(16, 4, 4, 32).permute(0, 3, 1, 2)
    conv(x).square().sum().backward()
    raw = conv.weight.grad.clone()
    conv.weight.grad = None
    assert standard_grad_strides(conv.parameters()) == 1
    conv(x).square().sum().backward()
    assert conv.weight.grad.stride() == conv.weight.stride()
    torch.testing.assert_close(conv.weight.grad, raw)
