"""The classification engine: metrics, seeded shards, training records, checkpoints, exact
resume, errors (NaN, bad taps, bad data), gradient accumulation and the SoKD arch-step hook."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from torch import nn

from distill import DISTILLERS
from distill.checkpoint import load_checkpoint
from distill.config_checks import ConfigError
from distill.distillers.logits import DML
from distill.engines import NonFiniteLossError
from distill.engines.classification.train import DataLoadError, train_classification
from distill.engines.core.checkpoints import list_checkpoints
from distill.engines.classification.data import ShardedBatches
from distill.engines.classification.metrics import ClassificationMeter
from distill.taps import TapPathError

ONLINE_ADM_TERMS = {'student.task', 'student.kd', 'student.co',
                    'teacher.task', 'teacher.kd', 'teacher.di'}


def tiny_cfg(epochs=2, distiller_type='ADM', num_train=96, **distiller_kw):
    """4 classes of 16x16 shapes, tiny CNNs, batches of 16: 6 steps per epoch."""
    distiller = dict(type=distiller_type,
                     student=dict(type='tiny_cnn', num_classes=4, width=4),
                     teacher=dict(type='tiny_cnn', num_classes=4, width=8),
                     adapter=dict(type='ClassifierAdapter', probe_input_size=16))
    if distiller_type == 'ADM':
        distiller['taps'] = [dict(student='stage3', teacher='stage3')]
        # every term at full weight from the first step (ADM's default warm-up ramps them, and
        # its ramp follows the run's length, which the resume tests change between runs)
        distiller['warmup'] = 0.0
    distiller.update(distiller_kw)
    shapes = dict(type='ShapesClassification', image_size=16, num_classes=4)
    return Config(dict(
        distiller=distiller,
        data=dict(train=dict(shapes, num_samples=num_train, seed=0),
                  val=dict(shapes, num_samples=40, seed=1),
                  batch_size=16, augment=dict(padding=2, flip=True),
                  normalize=dict(mean=(0.5,) * 3, std=(0.25,) * 3)),
        optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4),
        schedule=dict(epochs=epochs, milestones=[3], gamma=0.1),
        train=dict(seed=0, progress_bar=False, log_interval=2, keep_checkpoints=0)))


def checkpoint_names(work_dir) -> list[str]:
    return [path.name for path in list_checkpoints(work_dir)]


def read_checkpoint(folder) -> dict:
    """A ``checkpoint-N`` folder as one dict: its training state, the distiller's weights
    (``model``), the optimiser's state and, if any, the arch optimiser's; weights-only reads."""
    from safetensors.torch import load_file
    folder = Path(folder)
    state = json.loads((folder / 'training_state.json').read_text())
    state['model'] = load_file(folder / 'model.safetensors')
    state['optimizer'] = torch.load(folder / 'optimizer.bin', weights_only=True)
    if (folder / 'arch_optimizer.pt').is_file():
        state['arch_optimizer'] = load_checkpoint(folder / 'arch_optimizer.pt')
    return state


def newest_checkpoint(work_dir) -> dict:
    return read_checkpoint(list_checkpoints(work_dir)[-1])


# ---------------------------------------------------------------------------- metrics, shards
def reference_ece(confidences, correct, num_bins=15):
    confidences, correct = np.asarray(confidences, float), np.asarray(correct, float)
    total = 0.0
    for b in range(num_bins):
        low, high = b / num_bins, (b + 1) / num_bins
        inside = (confidences > low) & (confidences <= high)
        if b == 0:
            inside |= confidences == 0
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidences[inside].mean())
    return total


def test_metrics_match_references():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 10, generator=gen) * 3
    labels = torch.randint(0, 10, (200,), generator=gen)
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    correct = pred == labels
    meter = ClassificationMeter()
    meter.update(logits[:77], labels[:77])  # two batches: the metrics accumulate
    meter.update(logits[77:], labels[77:])
    summary = meter.summary()
    assert summary['num_samples'] == 200
    assert summary['top1'] == pytest.approx(100 * correct.float().mean().item())
    top5 = (logits.topk(5, 1).indices == labels[:, None]).any(1).float().mean().item()
    assert summary['top5'] == pytest.approx(100 * top5)
    assert summary['ece'] == pytest.approx(100 * reference_ece(conf.numpy(), correct.numpy()),
                                           abs=1e-4)
    # fewer classes than 5: top-5 is every class
    small = ClassificationMeter()
    small.update(logits[:, :4], labels % 4)
    assert small.summary()['top5'] == 100.0


def test_shards_are_seeded_disjoint_and_even():
    ranks = [ShardedBatches(10, 3, True, seed=5, rank=r, num_processes=3) for r in range(3)]
    first = [s.indices(epoch=1) for s in ranks]
    assert {len(i) for i in first} == {4}  # 10 padded to 12: every rank takes 4 steps
    assert set(sum(first, [])) == set(range(10))
    assert first == [s.indices(epoch=1) for s in ranks]  # a function of (seed, epoch)
    assert first != [s.indices(epoch=2) for s in ranks]
    val = [ShardedBatches(10, 3, False, rank=r, num_processes=3).indices(0) for r in range(3)]
    assert sorted(sum(val, [])) == list(range(10))  # evaluation: every sample exactly once
    assert ShardedBatches(17, 8, True).batches(1)[-1] != 1  # a lone last sample is dropped
    assert [len(b) for b in ShardedBatches(17, 8, True).batches(1)] == [8, 8]
    with pytest.raises(ValueError, match='empty'):
        ShardedBatches(0, 8, True)


# ---------------------------------------------------------------------------- training runs
def test_training_writes_records_checkpoints_and_logs(tmp_path):
    result = train_classification(tiny_cfg(epochs=2), work_dir=tmp_path)
    records = json.loads((tmp_path / 'metrics.json').read_text())
    assert [r['epoch'] for r in records] == [1, 2] and records == result.records
    for record in records:
        assert ONLINE_ADM_TERMS <= set(record)  # every term, by name, as an epoch mean
        for net in ('student', 'teacher'):
            for metric in ('top1', 'top5', 'ece'):
                assert 0 <= record[f'val/{net}/{metric}'] <= 100
        assert record['val/num_samples'] == 40 and record['num_processes'] == 1
        assert record['lr'] == 0.05 and math.isfinite(record['loss'])
    assert checkpoint_names(tmp_path) == ['checkpoint-6', 'checkpoint-12']
    state = newest_checkpoint(tmp_path)  # weights-only reads
    assert state['epoch'] == 2 and state['global_step'] == 12 and len(state['records']) == 2
    assert read_checkpoint(tmp_path / 'checkpoint-6')['epoch'] == 1
    final = result.distiller.state_dict()
    assert all(torch.equal(final[k], v) for k, v in state['model'].items())
    assert {k for k, v in final.items() if v.is_floating_point()} <= set(state['model'])
    student = load_checkpoint(tmp_path / 'student.pth')
    assert torch.equal(student['fc.weight'], final['student.fc.weight'])
    assert list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))
    assert 'student top1' in (tmp_path / 'train.log').read_text()


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    # milestones=[3]: the lr decay falls after the resume point, so the schedule is restored too
    full = train_classification(tiny_cfg(epochs=4), work_dir=tmp_path / 'full')
    train_classification(tiny_cfg(epochs=2), work_dir=tmp_path / 'split')
    resumed = train_classification(tiny_cfg(epochs=4), work_dir=tmp_path / 'split', resume=True)
    expected, got = full.distiller.state_dict(), resumed.distiller.state_dict()
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    drop_time = [{k: v for k, v in r.items() if k != 'epoch_time_s'} for r in
                 json.loads((tmp_path / 'split' / 'metrics.json').read_text())]
    assert drop_time == [{k: v for k, v in r.items() if k != 'epoch_time_s'}
                         for r in full.records]


def test_resume_with_another_batch_size_is_refused(tmp_path):
    # the saved position in the epoch (batches done) would map onto other batches: metrics.json
    # held epochs [1, 2, 3, 3, 4, ...] after half an epoch was trained again
    train_classification(tiny_cfg(epochs=1), work_dir=tmp_path)
    cfg = tiny_cfg(epochs=2)
    cfg.data.batch_size = 8
    with pytest.raises(ValueError, match=r'checkpoint-6 was written with 6 batches per epoch '
                                         r'and this run has 12 \(another batch size'):
        train_classification(cfg, work_dir=tmp_path, resume=True)
    assert checkpoint_names(tmp_path) == ['checkpoint-6']  # nothing written


def test_gradient_accumulation_steps_the_optimiser_once_per_group(tmp_path):
    cfg = tiny_cfg(epochs=1, distiller_type='DML')
    cfg.optimizer = dict(type='Adam', lr=1e-3)
    cfg.train.gradient_accumulation_steps = 4  # 6 batches: groups of 4 and 2
    train_classification(cfg, work_dir=tmp_path)
    state = newest_checkpoint(tmp_path)
    assert {float(s['step']) for s in state['optimizer']['state'].values()} == {2.0}
    assert state['global_step'] == 2  # optimiser steps


@DISTILLERS.register_module(force=True)
class NaNAtStepDML(DML):
    """DML whose student KD term becomes NaN from the ``nan_step``-th forward on."""

    def __init__(self, *args, nan_step=1, **kwargs):
        super().__init__(*args, **kwargs)
        self.nan_step, self.calls = nan_step, 0

    def forward(self, batch):
        terms = super().forward(batch)
        self.calls += 1
        if self.calls >= self.nan_step:
            terms['student.kd'] = terms['student.kd'] * float('nan')
        return terms


def test_nan_names_term_and_step_and_keeps_earlier_checkpoints(tmp_path):
    cfg = tiny_cfg(epochs=3, distiller_type='NaNAtStepDML', nan_step=9)  # step 9 = epoch 2
    with pytest.raises(NonFiniteLossError,
                       match=r'term student\.kd became non-finite \(nan\) at step 9 \(epoch 2\)'):
        train_classification(cfg, work_dir=tmp_path)
    assert checkpoint_names(tmp_path) == ['checkpoint-6']  # epoch 1's only
    latest = newest_checkpoint(tmp_path)
    assert latest['epoch'] == 1
    assert all(torch.isfinite(v).all() for v in latest['model'].values() if v.is_floating_point())
    assert [r['epoch'] for r in json.loads((tmp_path / 'metrics.json').read_text())] == [1]


def test_unknown_tap_and_unalignable_features_are_named(tmp_path):
    with pytest.raises(TapPathError, match=r"'stage9'.*stage3"):
        train_classification(tiny_cfg(taps=[dict(student='stage9', teacher='stage3')]),
                             work_dir=tmp_path)
    with pytest.raises(ValueError, match=r'fc'):
        train_classification(tiny_cfg(taps=[dict(student='fc', teacher='stage3')]),
                             work_dir=tmp_path)


def test_bad_image_folders_are_named(tmp_path):
    from distill.data import write_shapes_imagefolder
    (tmp_path / 'empty').mkdir()
    cfg = tiny_cfg(epochs=1, distiller_type='DML')
    cfg.data.train = dict(type='ImageFolder', root=str(tmp_path / 'empty'))
    with pytest.raises(Exception, match='empty'):
        train_classification(cfg, work_dir=tmp_path / 'run_empty')

    roots = write_shapes_imagefolder(tmp_path / 'shapes', num_train=32, num_val=8,
                                     image_size=16, num_classes=4)
    broken = sorted(roots['train'].rglob('*.png'))[5]
    broken.write_bytes(b'not an image')
    cfg.data.train = dict(type='ImageFolder', root=str(roots['train']))
    cfg.data.val = dict(type='ImageFolder', root=str(roots['val']))
    with pytest.raises(DataLoadError, match=rf'training batch \d of epoch 1.*{broken.name}'):
        train_classification(cfg, work_dir=tmp_path / 'run_broken')


@DISTILLERS.register_module(force=True)
class FakeArchDistiller(DML):
    """The SoKD engine protocol, duck-typed: arch parameters stepped by a second optimiser."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha = nn.Parameter(torch.zeros(3))
        self.arch_calls = []

    def arch_parameters(self):
        return [self.alpha]

    def wants_arch_step(self, epoch, step_in_epoch):
        return step_in_epoch % 2 == 1

    def arch_backward(self, train_batch, val_batch):
        self.arch_calls.append(not torch.equal(train_batch['inputs'], val_batch['inputs']))
        loss = ((self.alpha - 1.0) ** 2).sum()
        # a stray gradient in a main parameter: the engine must drop it
        (loss + 1e3 * self.student.fc.bias.sum()).backward()
        return {'val_loss': loss.item()}

    def policy(self):
        return {'alpha': self.alpha.detach().tolist()}


def test_arch_step_hook_of_sokd_style_distillers(tmp_path):
    cfg = tiny_cfg(epochs=2, distiller_type='FakeArchDistiller')
    cfg.train.gradient_accumulation_steps = 2  # arch steps fall mid-group (steps 1, 3, 5)
    result = train_classification(cfg, work_dir=tmp_path)
    model = result.distiller
    assert model.arch_calls == [True] * 6  # 3 per epoch, each with a different val batch
    alpha = model.alpha.detach()
    # Adam moves alpha by about lr per arch step: 6 steps of the default lr (0.05)
    assert (alpha > 0).all() and (alpha < 0.35).all() and torch.allclose(alpha, alpha[0])
    record = result.records[-1]
    assert 'arch.val_loss' in record and record['policy']['alpha'] == alpha.tolist()
    state = newest_checkpoint(tmp_path)
    main_count = sum(1 for p in model.parameters() if p.requires_grad) - 1
    assert len(state['optimizer']['param_groups'][0]['params']) == main_count
    assert state['arch_optimizer']['param_groups'][0]['lr'] == 0.05  # SoKD's ARCH_OPTIMIZER
    # the stray 1e3 gradient never reached the student (it would have thrown fc.bias far off)
    assert model.student.fc.bias.abs().max() < 1.0


# ---------------------------------------------------------------------------- device-held data
@pytest.mark.parametrize('channels, pad', [(1, 2), (3, 0)])
def test_a_gathered_batch_equals_the_collated_samples(tmp_path, channels, pad):
    from fmnist_helpers import write_fmnist
    from distill.data import collate_classification
    from distill.data.fmnist import FashionMNIST
    data = FashionMNIST(write_fmnist(tmp_path, train=12), channels=channels, pad=pad)
    indices = [5, 0, 11, 3]
    want = collate_classification([data[i] for i in indices])
    got = data.held_on('cpu').gather(torch.tensor(indices))
    assert torch.equal(got['inputs'], want['inputs']) and got['inputs'].is_contiguous()
    assert torch.equal(got['labels'], want['labels'])


def test_data_held_on_the_device_trains_bit_for_bit_as_the_loader_does(tmp_path):
    """``data.on_device`` (default True for in-memory sets) gathers each batch from the set
    held on the device; the run is the per-sample DataLoader's run, weights and records."""
    from fmnist_helpers import write_fmnist
    (tmp_path / 'fmnist').mkdir()
    root = write_fmnist(tmp_path / 'fmnist', train=40, test=12)
    results = {}
    for on_device in (True, False):
        cfg = tiny_cfg(epochs=2)
        for net in (cfg.distiller.student, cfg.distiller.teacher):
            net.in_channels, net.num_classes = 1, 10
        cfg.distiller.adapter.in_channels = 1
        fmnist = dict(type='FashionMNIST', root=str(root), channels=1, pad=0)
        cfg.data.train, cfg.data.val = dict(fmnist, train=True), dict(fmnist, train=False)
        cfg.data.normalize = dict(mean=(0.5,), std=(0.25,))
        cfg.data.on_device = on_device
        results[on_device] = train_classification(cfg, work_dir=tmp_path / str(on_device))
    held, loaded = results[True], results[False]
    for a, b in zip(held.records, loaded.records, strict=True):
        differ = {k for k in a if a[k] != b.get(k)}
        assert differ <= {'epoch_time_s'}, (differ, a, b)  # only the wall time
    for key, value in loaded.distiller.state_dict().items():
        assert torch.equal(held.distiller.state_dict()[key], value), key


def test_channels_last_lays_out_networks_and_batches_in_nhwc(tmp_path):
    """``train.channels_last``: the convolution weights and every batch in NHWC memory (what
    GPU convolutions prefer); the run trains as the NCHW one does, to float rounding."""
    from distill.engines.classification.data import BatchPreparer
    preparer = BatchPreparer('cpu', dict(padding=2, flip=True), None, channels_last=True)
    batch = preparer(dict(inputs=torch.rand(4, 3, 16, 16), labels=torch.zeros(4)),
                     preparer.generator(0))
    assert batch['inputs'].is_contiguous(memory_format=torch.channels_last)
    results = {}
    for channels_last in (True, False):
        cfg = tiny_cfg(epochs=1)
        cfg.train.channels_last = channels_last
        results[channels_last] = train_classification(cfg, work_dir=tmp_path / str(channels_last))
    nhwc, nchw = results[True], results[False]
    conv = next(m.weight for m in nhwc.distiller.student.modules() if isinstance(m, nn.Conv2d))
    assert conv.is_contiguous(memory_format=torch.channels_last)
    for key, value in nchw.distiller.state_dict().items():
        torch.testing.assert_close(nhwc.distiller.state_dict()[key], value, atol=1e-4,
                                   rtol=1e-3, msg=key)
    bad = tiny_cfg(epochs=1)
    bad.train.channels_last = 'yes'
    with pytest.raises(ConfigError, match='channels_last is True or False'):
        train_classification(bad, work_dir=tmp_path / 'bad')
