"""SoKD's search on the mmengine Runner: the arch step's batches (the current training batch and
one of a separate shuffle of the training set, as in the classification engine), the arch
optimiser in checkpoints, the first arch step after a resume, and a 2-process run with the
search on (distill/engines/mmengine/sokd_search.py)."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

pytest.importorskip('mmengine')

from distill import build_distiller  # noqa: E402
from distill.data.shapes import ShapesClassification  # noqa: E402

pytestmark = pytest.mark.end_to_end  # collected first (conftest.py)


def sokd(seed=0):
    torch.manual_seed(seed)
    return build_distiller(dict(
        type='SoKD', arch_interval=2, dam=dict(channels=8),
        base=dict(type='FitNet', student=dict(type='tiny_cnn', num_classes=6, width=4),
                  teacher=dict(type='tiny_cnn', num_classes=6, width=8),
                  adapter=dict(type='ClassifierAdapter', probe_input_size=16),
                  taps=[dict(student='stage3', teacher='stage3')],
                  random_teacher=True))).train()


def batch(seed):
    data = ShapesClassification(num_samples=8, seed=seed, image_size=16, num_classes=6)
    return dict(inputs=torch.stack([data[i]['inputs'] for i in range(8)]),
                labels=torch.tensor([int(data[i]['labels']) for i in range(8)]))


def at_iter(step):
    from mmengine.logging import MessageHub
    MessageHub.get_current_instance().update_info('iter', step)


@pytest.fixture
def restore_iter():
    from mmengine.logging import MessageHub
    hub = MessageHub.get_current_instance()
    had, previous = 'iter' in hub.runtime_info, hub.get_info('iter')
    yield
    if had:
        hub.update_info('iter', previous)
    else:  # no 'iter' = None left behind: a later test's model reads iter + 1
        hub.runtime_info.pop('iter', None)


def val_source(seed=0, rank=0, world_size=1, dataset_size=20, batch_size=4):
    """A ShuffledTrainBatches over a shapes set of ``dataset_size`` images."""
    from distill.engines.mmengine.sokd_search import ShuffledTrainBatches
    data = ShapesClassification(num_samples=dataset_size, seed=7, image_size=16, num_classes=6)

    def collate(samples):
        return dict(inputs=torch.stack([s['inputs'] for s in samples]),
                    labels=torch.tensor([int(s['labels']) for s in samples]))
    return ShuffledTrainBatches(data, collate, batch_size, seed, prepare=lambda b: b,
                                rank=rank, world_size=world_size)


def test_val_batches_are_a_separate_shuffle_reseeded_per_epoch_and_sharded():
    source = val_source()
    epoch1 = [source.indices(1, step) for step in range(5)]
    assert sorted(i for batch in epoch1 for i in batch) == list(range(20))  # a permutation
    assert epoch1 != [list(range(4 * s, 4 * s + 4)) for s in range(5)]  # shuffled
    assert [source.indices(2, step) for step in range(5)] != epoch1  # reseeded per epoch
    assert val_source().indices(1, 3) == epoch1[3]  # a function of (seed, epoch, step) alone
    # the one seeding rule of both engines (the Accelerate core's, engines/core/task.py)
    from distill.engines.core.data_order import seeded_permutation
    assert source.order(1) == seeded_permutation(20, 0, 1, 'arch-val')
    assert val_source(seed=1).indices(1, 0) != epoch1[0]
    shares = [val_source(rank=r, world_size=2) for r in (0, 1)]
    first = [set(i for s in range(3) for i in share.indices(1, s)[:]) for share in shares]
    assert not first[0] & first[1]  # the processes draw disjoint samples
    batch = source(1, 0)
    assert batch['inputs'].shape == (4, 3, 16, 16) and batch['labels'].shape == (4,)


class Recorder(nn.Module):
    """A stand-in distiller that records what the arch step is given."""

    def __init__(self):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(2))
        self.calls = []

    def arch_parameters(self):
        return [self.alpha]

    def wants_arch_step(self, epoch, step):
        return step % 2 == 0

    def arch_backward(self, train_batch, val_batch):
        self.calls.append((train_batch, val_batch))
        (self.alpha.sum() * 0).backward()
        return {'arch.val_loss': 1.0}


@pytest.mark.usefixtures('restore_iter')
def test_arch_step_gets_the_current_batch_and_a_shuffled_train_batch():
    """The protocol of both engines: train_batch = the current training batch, val_batch = the
    batch of the separate shuffle at (search epoch, step); after a resume the same one."""
    from distill.engines.mmengine.model import DEFAULT_ARCH_OPTIMIZER
    from distill.engines.mmengine.sokd_search import ArchSearch
    recorder = Recorder()
    search = ArchSearch(recorder, DEFAULT_ARCH_OPTIMIZER, search_iters=4)
    at_iter(0)
    with pytest.raises(RuntimeError, match='distill.ArchBatchesHook'):
        search.maybe_step(batch(0))
    search.val_batches = val_source()
    for step in range(6):
        at_iter(step)
        search.maybe_step(batch(step))
    assert len(recorder.calls) == 3  # iterations 0, 2 and 4 (= epoch 2, step 0)
    for (train_batch, val_batch), step, (epoch, in_epoch) in zip(
            recorder.calls, (0, 2, 4), ((1, 0), (1, 2), (2, 0))):
        torch.testing.assert_close(train_batch['inputs'], batch(step)['inputs'])
        torch.testing.assert_close(val_batch['inputs'], val_source()(epoch, in_epoch)['inputs'])
    # a resumed search (a new object, as after --resume) draws the same val batch at iter 4
    resumed = ArchSearch(Recorder(), DEFAULT_ARCH_OPTIMIZER, search_iters=4)
    resumed.val_batches = val_source()
    at_iter(4)
    resumed.maybe_step(batch(4))
    torch.testing.assert_close(resumed._distiller[0].calls[0][1]['inputs'],
                               recorder.calls[2][1]['inputs'])


@pytest.mark.usefixtures('restore_iter')
def test_arch_state_round_trips_and_the_first_step_after_resume_is_taken():
    from distill.engines.mmengine.model import DEFAULT_ARCH_OPTIMIZER
    from distill.engines.mmengine.sokd_search import ArchSearch
    distiller = sokd()
    search = ArchSearch(distiller, DEFAULT_ARCH_OPTIMIZER, search_iters=8)
    search.val_batches = val_source(batch_size=8)
    assert all(not p.requires_grad for p in distiller.arch_parameters())
    at_iter(0)
    search.maybe_step(batch(0))
    assert set(search.pop_stats()) == {'arch.train_loss', 'arch.val_loss', 'arch.grad_norm'}
    at_iter(1)
    search.maybe_step(batch(1))
    assert search.pop_stats() == {}  # arch_interval 2
    at_iter(2)
    search.maybe_step(batch(2))
    assert search.pop_stats()['arch.val_loss'] > 0
    assert all(p.grad is None and not p.requires_grad for p in distiller.arch_parameters())
    # the optimiser state is in the state dict, as a tensor a weights-only load accepts
    buffer = io.BytesIO()
    torch.save(dict(state_dict=distiller.state_dict(), search=search.state_dict()), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert saved['search']['_extra_state'].dtype == torch.uint8
    resumed_distiller = sokd(seed=1)
    resumed_distiller.load_state_dict(saved['state_dict'])
    # a resume with another arch lr: the config's wins over the restored one
    resumed = ArchSearch(resumed_distiller, dict(DEFAULT_ARCH_OPTIMIZER, lr=0.01),
                         search_iters=8)
    resumed.load_state_dict(saved['search'])
    before, after = search.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert [g['lr'] for g in after['param_groups']] == [0.01] * len(after['param_groups'])
    assert ([dict(g, lr=None) for g in before['param_groups']]
            == [dict(g, lr=None) for g in after['param_groups']])
    for index, state in before['state'].items():
        for key, value in state.items():
            torch.testing.assert_close(after['state'][index][key], value)
    assert float(after['state'][0]['step']) == 2
    # --resume at iteration 4: the arch step is taken there as in the uninterrupted run
    resumed.val_batches = val_source(batch_size=8)
    at_iter(4)
    resumed.maybe_step(batch(4))
    assert resumed.pop_stats() and float(resumed.optimizer.state_dict()['state'][0]['step']) == 3
    with pytest.raises(TypeError, match='_extra_state'):
        resumed.set_extra_state({'not': 'a tensor'})


def _shapes_seg_with_teacher(tmp_path, num_val: int):
    """The shapes segmentation set (8 train images) and a teacher checkpoint of the shapes
    configs' teacher, for the SoKD Runner runs below."""
    from mm_helpers import REPO, save_model_checkpoint
    from mmengine.config import Config
    from test_segmentation import SHAPES

    from distill.data.mmseg_layout import write_shapes_mmseg
    from distill.engines.mmengine.build import build_mm_model
    root = tmp_path / 'shapes_seg'
    write_shapes_mmseg(root, num_train=8, num_val=num_val, image_size=32)
    cfg = Config.fromfile(str(REPO / SHAPES / '_base_.py'))
    teacher_ckpt = save_model_checkpoint(build_mm_model(cfg.teacher_model, 'mmseg'),
                                         tmp_path / 'teacher.pth')
    return root, teacher_ckpt


def test_two_process_segmentation_run_searches(tmp_path):
    """torchrun, 2 CPU processes (gloo), SoKD+FitNet on the shapes segmentation set: the search
    runs under MMDistributedDataParallel (it used to be refused) and its optimiser state is in
    the checkpoint."""
    pytest.importorskip('mmseg')
    from mm_helpers import run_script, scalars
    from test_segmentation import SHAPES, TRAIN, few_iters
    root, teacher_ckpt = _shapes_seg_with_teacher(tmp_path, num_val=4)
    work = tmp_path / 'ddp'
    out = run_script(TRAIN, f'{SHAPES}/sokd_fitnet.py', '--launcher', 'pytorch',
                     '--work-dir', str(work),
                     *few_iters(root, iters=2, interval=2, extra=[
                         f'model.teacher_ckpt={teacher_ckpt}', 'model.search_iters=2',
                         'model.distiller.arch_interval=1']),
                     torchrun=2, timeout=300)
    assert 'Distributed training: True' in out
    assert sum('arch.val_loss' in r for r in scalars(work)) == 2  # steps 0 and 1
    state = torch.load(work / 'iter_2.pth', weights_only=True)['state_dict']
    saved = torch.load(io.BytesIO(state['arch_search._extra_state'].numpy().tobytes()),
                       weights_only=True)
    assert float(saved['state'][0]['step']) == 2


def test_resumed_search_ends_with_the_uninterrupted_weights_and_policy(tmp_path):
    """SoKD+FitNet, an arch step every iteration: resumed from iter_2.pth, iter_4.pth (student,
    DAFA's policy, DAM, the arch optimiser's state) equals the uninterrupted run's: the val
    batches depend on the position only, torch's RNG travels in the checkpoint."""
    pytest.importorskip('mmseg')
    import shutil
    from mm_helpers import run_script
    from test_segmentation import SHAPES, TRAIN, few_iters

    from distill.engines.mmengine.safe_load import allow_mmengine_checkpoint_globals
    root, teacher_ckpt = _shapes_seg_with_teacher(tmp_path, num_val=2)
    options = few_iters(root, iters=4, interval=2, extra=[
        f'model.teacher_ckpt={teacher_ckpt}', 'model.search_iters=4',
        'model.distiller.arch_interval=1', 'train_cfg.val_interval=100'])
    whole, resumed = tmp_path / 'whole', tmp_path / 'resumed'
    run_script(TRAIN, f'{SHAPES}/sokd_fitnet.py', '--work-dir', str(whole), *options)
    resumed.mkdir()
    for name in ('iter_2.pth', 'iter_2.pth.sha256'):
        shutil.copy(whole / name, resumed / name)
    (resumed / 'last_checkpoint').write_text(str(resumed / 'iter_2.pth'))
    run_script(TRAIN, f'{SHAPES}/sokd_fitnet.py', '--work-dir', str(resumed), '--resume',
               *options)
    allow_mmengine_checkpoint_globals()
    expected = torch.load(whole / 'iter_4.pth', weights_only=True)['state_dict']
    got = torch.load(resumed / 'iter_4.pth', weights_only=True)['state_dict']
    assert expected.keys() == got.keys()
    assert any('alpha' in k or 'dafa' in k for k in expected)
    differ = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not differ, differ[:5]
