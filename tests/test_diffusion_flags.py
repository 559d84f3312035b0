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


def ema_task(*flags):
    """A ``DiffusionTask`` of the tiny shapes config with ``flags``, on a one-process CPU
    stand-in for the accelerator (no run: the EMA is built and stepped by hand)."""
    from types import SimpleNamespace

    from distill.engines.diffusion.train import DiffusionTask
    accelerator = SimpleNamespace(is_main_process=True, device=torch.device('cpu'),
                                  process_index=0, num_processes=1)
    torch.manual_seed(0)
    return DiffusionTask(config('--resolution', '8', *flags), accelerator)


def test_ema_flags_reach_the_ema_model():
    """--ema_inv_gamma, --ema_power and --ema_max_decay reach diffusers' EMAModel, with the
    warm-up of train_unconditional.py on (``use_ema_warmup=True``); --no-use_ema builds none."""
    ema = ema_task('--ema_inv_gamma', '2', '--ema_power', '0.5', '--ema_max_decay', '0.4').ema
    assert ema.use_ema_warmup is True
    assert (ema.inv_gamma, ema.power, ema.decay) == (2.0, 0.5, 0.4)
    assert ema.optimization_step == 0
    assert ema_task('--no-use_ema').ema is None


def test_ema_follows_the_warmup_decay_recurrence():
    """After each optimiser step (``after_optimizer_step``) the EMA is ``d_k e + (1 - d_k) w``
    with diffusers' warm-up decay ``d_k = min(1 - (1 + (k - 1) / inv_gamma) ** -power,
    max_decay)`` (0 at the first step): written out here over five steps of random weight
    changes, the last one capped by max_decay. The student's own weights are untouched, and
    ``ema_weights`` swaps the EMA in and back out."""
    import time
    inv_gamma, power, max_decay = 2.0, 0.5, 0.4
    task = ema_task('--ema_inv_gamma', str(inv_gamma), '--ema_power', str(power),
                    '--ema_max_decay', str(max_decay))
    params = list(task.student.parameters())
    expected = [p.detach().clone() for p in params]
    generator = torch.Generator().manual_seed(1)
    decays = []
    for step in range(1, 6):
        with torch.no_grad():  # an optimiser step
            for p in params:
                p.add_(torch.randn(p.shape, generator=generator))
        task.step_start = time.perf_counter()
        task.after_optimizer_step(trainer=None)
        k = step - 1
        decay = 0.0 if k == 0 else min(1 - (1 + k / inv_gamma) ** -power, max_decay)
        decays.append(decay)
        expected = [decay * e + (1 - decay) * p.detach() for e, p in zip(expected, params)]
    assert decays[-1] == max_decay and 0 < decays[1] < decays[2] < decays[3] < max_decay
    assert task.ema.optimization_step == 5
    trained = [p.detach().clone() for p in params]
    for shadow, want in zip(task.ema.shadow_params, expected):
        torch.testing.assert_close(shadow, want)
    assert not torch.allclose(expected[0], trained[0])
    with task.ema_weights(True):
        for p, want in zip(params, expected):
            torch.testing.assert_close(p.detach(), want)
    assert all(torch.equal(p.detach(), w) for p, w in zip(params, trained))
