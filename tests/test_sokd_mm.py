"""SoKD's search on the mmengine Runner: the arch optimiser in checkpoints, the first arch step
after a resume, and a 2-process run with the search on (distill/engines/mmengine/sokd_search.py)."""
from __future__ import annotations

import io

import pytest
import torch

pytest.importorskip('mmengine')

from distill import build_distiller  # noqa: E402
from distill.data.shapes import ShapesClassification  # noqa: E402


def sokd(seed=0):
    torch.manual_seed(seed)
    return build_distiller(dict(
        type='SoKD', arch_interval=2, dam=dict(channels=8),
        base=dict(type='FitNet', student=dict(type='tiny_cnn', num_classes=6, width=4),
                  teacher=dict(type='tiny_cnn', num_classes=6, width=8),
                  adapter=dict(type='ClassifierAdapter', input_size=16),
                  taps=[dict(student='stage3', teacher='stage3')]))).train()


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
    previous = MessageHub.get_current_instance().get_info('iter')
    yield
    MessageHub.get_current_instance().update_info('iter', previous)


@pytest.mark.usefixtures('restore_iter')
def test_arch_state_round_trips_and_the_first_step_after_resume_is_taken():
    from distill.engines.mmengine.model import DEFAULT_ARCH_OPTIMIZER
    from distill.engines.mmengine.sokd_search import ArchSearch
    distiller = sokd()
    search = ArchSearch(distiller, DEFAULT_ARCH_OPTIMIZER, search_iters=8)
    assert all(not p.requires_grad for p in distiller.arch_parameters())
    at_iter(0)  # a fresh run: no previous batch, the batch is split in halves
    search.maybe_step(batch(0))
    assert set(search.pop_stats()) == {'arch.train_loss', 'arch.val_loss', 'arch.grad_norm'}
    at_iter(1)
    search.maybe_step(batch(1))
    assert search.pop_stats() == {}  # arch_interval 2
    at_iter(2)
    search.maybe_step(batch(2))  # virtual step on this batch, held-out loss on batch(1)
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
    resumed = ArchSearch(resumed_distiller, DEFAULT_ARCH_OPTIMIZER, search_iters=8)
    resumed.load_state_dict(saved['search'])
    before, after = search.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert before['param_groups'] == after['param_groups']
    for index, state in before['state'].items():
        for key, value in state.items():
            torch.testing.assert_close(after['state'][index][key], value)
    assert float(after['state'][0]['step']) == 2
    # --resume at iteration 4: no previous batch in memory, the arch step is still taken
    at_iter(4)
    resumed.maybe_step(batch(4))
    assert resumed.pop_stats() and float(resumed.optimizer.state_dict()['state'][0]['step']) == 3
    with pytest.raises(TypeError, match='_extra_state'):
        resumed.set_extra_state({'not': 'a tensor'})


def test_two_process_segmentation_run_searches(tmp_path):
    """torchrun, 2 CPU processes (gloo), SoKD+FitNet on the shapes segmentation set: the search
    runs under MMDistributedDataParallel (it used to be refused) and its optimiser state is in
    the checkpoint."""
    pytest.importorskip('mmseg')
    from mm_helpers import REPO, run_script, save_model_checkpoint, scalars
    from mmengine.config import Config
    from test_segmentation import SHAPES, TRAIN, few_iters

    from distill.data.mmseg_layout import write_shapes_mmseg
    from distill.engines.mmengine.build import build_mm_model
    root = tmp_path / 'shapes_seg'
    write_shapes_mmseg(root, num_train=8, num_val=4, image_size=32)
    cfg = Config.fromfile(str(REPO / SHAPES / '_base_.py'))
    teacher_ckpt = save_model_checkpoint(build_mm_model(cfg.teacher_model, 'mmseg'),
                                         tmp_path / 'teacher.pth')
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
