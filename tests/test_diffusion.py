"""DiffusionAdapter: diffusers UNets distilled with ADM / KD on tiny random UNets (CPU, fast)."""
import pytest
import torch

from distill.adapters.diffusers import DiffusionAdapter
from distill.models.unets import build_unet2d  # the UNet builders are the model zoo's
from distill import build_distiller
from distill.engines.diffusion.eval import ddim_sample, denoising_mse, teacher_agreement

SIZE = 8


def unet(channels=(8, 16), layers_per_block=1, **extra):
    return dict(type='UNet2DModel', sample_size=SIZE, block_out_channels=channels,
                layers_per_block=layers_per_block, norm_num_groups=4,
                down_block_types=('DownBlock2D', 'DownBlock2D'),
                up_block_types=('UpBlock2D', 'UpBlock2D'), **extra)


def conditional_unet(channels=(8, 16), layers_per_block=1):
    return dict(type='UNet2DConditionModel', sample_size=SIZE, in_channels=4, out_channels=4,
                block_out_channels=channels, layers_per_block=layers_per_block,
                norm_num_groups=4, cross_attention_dim=12, attention_head_dim=4,
                down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
                up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'))


def adapter(prediction_type='epsilon'):
    return DiffusionAdapter(
        noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=100,
                             prediction_type=prediction_type), probe_input_size=SIZE)


BLOCK_TAPS = [dict(student='down_blocks.1', teacher='down_blocks.1', index=0),
              dict(student='mid_block', teacher='mid_block')]


def batch(channels=3, size=SIZE, count=2, states=None):
    images = torch.rand(count, channels, size, size, generator=torch.Generator().manual_seed(0))
    out = dict(pixel_values=images * 2 - 1)
    if states is not None:
        out['encoder_hidden_states'] = states
    return out


@pytest.mark.parametrize('online, names', [
    (True, {'student.task', 'student.kd', 'student.co', 'teacher.task', 'teacher.kd',
            'teacher.di'}),
    (False, {'student.task', 'student.kd', 'student.co'})])
def test_adm_terms_and_gradients(online, names):
    torch.manual_seed(0)
    distiller = build_distiller(dict(type='ADM', student=unet(), teacher=unet((16, 32), 2),
                                     adapter=adapter(), online=online, taps=BLOCK_TAPS,
                                     warmup=0.0, random_teacher=True))  # offline: meant here
    assert [(p['student'], p['teacher_shape']) for p in distiller.tap_pairs] == [
        ('down_blocks.1[0]', (32, SIZE // 2, SIZE // 2)), ('mid_block', (32, SIZE // 2, SIZE // 2))]
    terms = distiller(batch())
    assert set(terms) == names
    assert all(torch.isfinite(value) and value.dim() == 0 for value in terms.values())
    sum(terms.values()).backward()
    assert distiller.student.conv_in.weight.grad.abs().sum() > 0
    teacher_grad = distiller.teacher.conv_in.weight.grad
    assert (teacher_grad is not None and teacher_grad.abs().sum() > 0) == online


def test_output_matching_is_mse_to_detached_teacher():
    torch.manual_seed(0)
    distiller = build_distiller(dict(type='KD', student=unet(), teacher=unet((16, 32)),
                                     adapter=adapter(), loss_weights=dict(task=0.0, kd=1.0),
                                     random_teacher=True))
    prepared = distiller.adapter.prepare(batch())
    student = distiller.adapter.run(distiller.student, prepared)
    teacher = distiller.adapter.run(distiller.teacher, prepared)
    assert student.outputs.shape == prepared['pixel_values'].shape
    expected = ((student.outputs - teacher.outputs) ** 2).mean()
    loss = distiller.adapter.output_loss(student, teacher, prepared, temperature=4.0)
    torch.testing.assert_close(loss, expected)
    assert distiller.adapter.output_loss(student, teacher, prepared, 1.0) == loss  # no T
    loss.backward()
    assert all(p.grad is None for p in distiller.teacher.parameters())


def test_prepare_shares_noise_and_follows_the_generator():
    tiny = adapter()
    first = tiny.prepare(dict(batch(), generator=torch.Generator().manual_seed(3)))
    again = tiny.prepare(dict(batch(), generator=torch.Generator().manual_seed(3)))
    other = tiny.prepare(dict(batch(), generator=torch.Generator().manual_seed(4)))
    assert torch.equal(first['noisy'], again['noisy'])
    assert torch.equal(first['timesteps'], again['timesteps'])
    assert not torch.equal(first['noise'], other['noise'])
    assert torch.equal(first['target'], first['noise'])  # epsilon prediction


def test_noisy_input_is_the_forward_process_at_the_drawn_timestep():
    """``noisy = sqrt(a_t) x + sqrt(1 - a_t) eps`` with the scheduler's ``alphas_cumprod`` at
    each image's own drawn timestep ``t`` (not ``T - 1 - t``, nor another image's)."""
    tiny = adapter()
    prepared = tiny.prepare(dict(batch(count=6), generator=torch.Generator().manual_seed(2)))
    timesteps = prepared['timesteps']
    assert len(set(timesteps.tolist())) > 1 and bool((timesteps != 99 - timesteps).all())
    alpha_bar = tiny.noise_scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    expected = (alpha_bar.sqrt() * prepared['pixel_values']
                + (1 - alpha_bar).sqrt() * prepared['noise'])
    torch.testing.assert_close(prepared['noisy'], expected)


def test_v_prediction_target():
    tiny = adapter('v_prediction')
    prepared = tiny.prepare(dict(batch(), generator=torch.Generator().manual_seed(0)))
    velocity = tiny.noise_scheduler.get_velocity(prepared['pixel_values'], prepared['noise'],
                                                 prepared['timesteps'])
    torch.testing.assert_close(prepared['target'], velocity)
    assert not torch.allclose(prepared['target'], prepared['noise'])


def test_auto_taps_pair_decoder_blocks():
    distiller = build_distiller(dict(type='ADM', student=unet(), teacher=unet((16, 32), 2),
                                     adapter=adapter(), taps='auto', warmup=0.0))
    # the last module at stride 2 is the deepest decoder resnet before the upsampler
    assert [(p['student'], p['teacher']) for p in distiller.tap_pairs] == [
        ('up_blocks.0.resnets.1', 'up_blocks.0.resnets.2')]
    assert set(distiller(batch())) >= {'student.co', 'teacher.di'}


def test_conditional_unet_online_and_offline():
    torch.manual_seed(0)
    states = torch.randn(2, 3, 12)
    for online in (True, False):
        distiller = build_distiller(dict(
            type='ADM', student=conditional_unet(), teacher=conditional_unet((16, 32)),
            adapter=adapter(), online=online, taps=BLOCK_TAPS, warmup=0.0,
            random_teacher=True))
        terms = distiller(batch(channels=4, states=states))
        assert ('teacher.di' in terms) == online
        sum(terms.values()).backward()
    with pytest.raises(ValueError, match='encoder_hidden_states'):
        distiller(batch(channels=4))


def test_builders_load_local_pretrained(tmp_path):
    model = build_unet2d(**{k: v for k, v in unet().items() if k != 'type'})
    model.save_pretrained(tmp_path / 'teacher')
    loaded = build_unet2d(pretrained=str(tmp_path / 'teacher'))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), loaded.parameters()))
    with pytest.raises(FileNotFoundError, match='nothing is downloaded'):
        build_unet2d(pretrained=str(tmp_path / 'missing'))


def test_half_precision_frozen_teacher_runs():
    teacher = build_unet2d(**{k: v for k, v in unet().items() if k != 'type'})
    teacher.to(torch.bfloat16)
    tiny = adapter()
    output = tiny.run(teacher, tiny.prepare(batch()), compute_loss=False)
    assert output.outputs.dtype == torch.float32 and output.task_loss is None


def test_evaluation_metrics_compare_models():
    torch.manual_seed(0)
    tiny = adapter()
    student = build_unet2d(**{k: v for k, v in unet().items() if k != 'type'})
    images = batch(count=4)['pixel_values']
    mse = denoising_mse(student, tiny, images, num_buckets=2, seed=0)
    assert set(mse) == {'t000-049', 't050-099', 'mean'}
    assert mse == denoising_mse(student, tiny, images, num_buckets=2, seed=0)  # fixed noise
    noise = torch.randn(2, 3, SIZE, SIZE)
    config = tiny.noise_scheduler.config
    same = ddim_sample(student, config, noise, 3, adapter=tiny)
    assert teacher_agreement(same, ddim_sample(student, config, noise, 3, adapter=tiny)) == 0
    other = build_unet2d(**{k: v for k, v in unet().items() if k != 'type'})
    assert teacher_agreement(same, ddim_sample(other, config, noise, 3, adapter=tiny)) > 0


def test_ddim_sample_reaches_the_data_with_an_oracle_model():
    """With the exact noise prediction for a single data point, DDIM lands on that point."""
    from types import SimpleNamespace

    from diffusers import DDPMScheduler
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    data_point = torch.linspace(-0.8, 0.8, 3 * 4 * 4).view(1, 3, 4, 4)

    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))
            self.config = SimpleNamespace(in_channels=3)

        def forward(self, noisy, timesteps):
            alpha_bar = scheduler.alphas_cumprod[timesteps.long()].view(-1, 1, 1, 1)
            return ((noisy - alpha_bar.sqrt() * data_point) / (1 - alpha_bar).sqrt(),)

    samples = ddim_sample(Oracle(), scheduler.config, torch.randn(2, 3, 4, 4), 10,
                          adapter=DiffusionAdapter(noise_scheduler=scheduler))
    torch.testing.assert_close(samples, data_point.expand(2, -1, -1, -1), atol=1e-4, rtol=0)
