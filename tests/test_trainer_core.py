"""The Accelerate trainer core on a toy task: a step-based run (max_steps) with gradient
accumulation, dropout, a per-process extra state and checkpoints that fall mid-epoch; a crash
after a checkpoint and a resume from it end with the same weights, extra state and records as
an uninterrupted run; the schedule replays; config settings win over the restored optimiser."""
import json

import pytest
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from distill.engines.core.checkpoints import list_checkpoints
from distill.engines.core.data_order import derive_seed
from distill.engines.core.optimizers import step_schedulers
from distill.engines.core.trainer import Task, Trainer, TrainSettings

DATA = TensorDataset(torch.randn(40, 6, generator=torch.Generator().manual_seed(0)),
                     torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(1)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.3), nn.Linear(16, 3))
        self.progress = []

    def set_progress(self, value):
        self.progress.append(value)

    def forward(self, batch):
        inputs, labels = batch
        return {'task': nn.functional.cross_entropy(self.body(inputs), labels)}


class Crash(RuntimeError):
    pass


class ToyTask(Task):
    """Shuffled per epoch by its own generator; a per-process 'noise' generator drawn from at
    every step and checkpointed (as diffusion's noise generator); optionally crashes."""

    def __init__(self, crash_at=None):
        self.noise = torch.Generator().manual_seed(7)
        self.crash_at, self.evaluations = crash_at, 0

    def train_loader(self, trainer, epoch):
        order = torch.Generator().manual_seed(epoch)
        return DataLoader(DATA, batch_size=8, shuffle=True, generator=order)

    def prepare_batch(self, trainer, batch):
        inputs, labels = batch
        return inputs + 0.01 * torch.randn(inputs.shape, generator=self.noise), labels

    def after_optimizer_step(self, trainer):
        if trainer.global_step == self.crash_at:
            raise Crash(f'killed at step {trainer.global_step}')

    def evaluate(self, trainer):
        self.evaluations += 1
        return {'val/weight_sum': float(trainer.model.body[0].weight.detach().sum())}

    def process_states(self, trainer):
        return {'noise': self.noise.get_state()}

    def load_states(self, trainer, main, per_process):
        self.noise.set_state(per_process['noise'])


def make_trainer(work_dir, crash_at=None, lr=0.1, accumulation=2):
    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=accumulation)
    settings = TrainSettings(seed=3, max_steps=11, schedule_by_epoch=False,
                             checkpoint_every_epochs=None, checkpoint_every_steps=4,
                             keep_checkpoints=2, eval_every_epochs=None, eval_every_steps=4,
                             metrics_every_steps=2, log_every_steps=2, progress_bar=False)
    schedule = [dict(type='LinearLR', start_factor=0.5, begin=0, end=3),
                dict(type='CosineAnnealingLR', T_max=8, begin=3, end=11)]
    return Trainer(ToyTask(crash_at), Net(), accelerator, settings, work_dir,
                   dict(type='SGD', lr=lr, momentum=0.9), schedule)


def test_mid_epoch_checkpoints_resume_exactly(tmp_path):
    full = make_trainer(tmp_path / 'full')
    assert full.steps_per_epoch == 5 and full.total_steps == 11  # 3 updates per epoch
    full_records = full.run()
    assert full.global_step == 11
    assert full.model.progress[0] == 0 and full.model.progress[-1] == pytest.approx(10 / 11)
    assert [p.name for p in list_checkpoints(tmp_path / 'full')] == ['checkpoint-4',
                                                                      'checkpoint-8']
    state = json.loads((tmp_path / 'full' / 'checkpoint-4' / 'training_state.json').read_text())
    assert (state['epoch'], state['batches_in_epoch']) == (2, 2)  # mid-epoch: 3 + 1 updates

    crashed = make_trainer(tmp_path / 'run', crash_at=6)
    with pytest.raises(Crash):
        crashed.run()
    resumed = make_trainer(tmp_path / 'run')
    assert resumed.resume(True).name == 'checkpoint-4'
    records = resumed.run()
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert torch.equal(full.task.noise.get_state(), resumed.task.noise.get_state())
    assert records == full_records
    saved = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
    assert saved == full_records  # the crashed run's records past step 4 dropped
    assert [r['global_step'] for r in saved if r.get('kind') == 'train'] == [2, 4, 6, 8, 10]
    assert [r['global_step'] for r in saved if 'val/weight_sum' in r] == [4, 8]
    assert full.optimizer.param_groups[0]['lr'] == resumed.optimizer.param_groups[0]['lr']


def test_config_optimiser_settings_win_over_the_restored_state(tmp_path, caplog):
    crashed = make_trainer(tmp_path, crash_at=5)
    with pytest.raises(Crash):
        crashed.run()
    resumed = make_trainer(tmp_path, lr=0.05)
    with caplog.at_level('WARNING', logger='distill.trainer'):
        resumed.resume('latest')
    assert 'optimizer.lr: 0.1 (checkpoint) -> 0.05 (config)' in caplog.text
    group = resumed.optimizer.param_groups[0]
    assert group['initial_lr'] == 0.05
    # the schedule replayed from the new initial lr: as a fresh run's after 4 steps
    fresh = make_trainer(tmp_path / 'fresh', lr=0.05)
    step_schedulers(fresh.schedulers, 4)
    assert group['lr'] == fresh.optimizer.param_groups[0]['lr'] != 0.05


class DrawingTask(ToyTask):
    """Keeps, at each epoch's first batch, a draw of the global RNG (what dropout draws from)."""

    def __init__(self):
        super().__init__()
        self.first_draws = {}

    def prepare_batch(self, trainer, batch):
        self.first_draws.setdefault(trainer.epoch, float(torch.rand(())))
        return super().prepare_batch(trainer, batch)


def epoch_trainer(work_dir, task, epochs=2, accumulation=2):
    """An epoch-based run of the toy task: 5 micro-batches per epoch, no checkpoints."""
    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=accumulation)
    settings = TrainSettings(seed=3, epochs=epochs, checkpoint_every_epochs=None,
                             eval_every_epochs=None, progress_bar=False)
    return Trainer(task, Net(), accelerator, settings, work_dir, dict(type='SGD', lr=0.1))


def test_epochs_count_a_short_last_accumulation_group(tmp_path):
    """5 micro-batches in groups of 2 are 3 optimiser steps an epoch (the last group of one),
    so 2 epochs are 6 steps, and the progress the distiller sees runs from 0 to 5/6."""
    trainer = epoch_trainer(tmp_path, ToyTask())
    assert (trainer.steps_per_epoch, trainer.updates_per_epoch, trainer.total_steps) == (5, 3, 6)
    trainer.run()
    assert trainer.global_step == 6
    assert trainer.model.progress == pytest.approx([k / 6 for k in (0, 0, 1, 1, 2,
                                                                     3, 3, 4, 4, 5)])


def test_each_epoch_draws_its_own_global_random_numbers(tmp_path):
    """At the start of epoch ``e`` the global RNG (dropout) is seeded by
    ``derive_seed(seed, e, 'global', rank)``: each epoch draws other masks, and the same ones
    whether the run started at that epoch or earlier."""
    task = DrawingTask()
    epoch_trainer(tmp_path, task).run()
    expected = {epoch: float(torch.rand((), generator=torch.Generator().manual_seed(
        derive_seed(3, epoch, 'global', 0)))) for epoch in (1, 2)}
    assert task.first_draws == expected and expected[1] != expected[2]


def test_settings_need_one_length():
    with pytest.raises(ValueError, match='exactly one of epochs and max_steps'):
        Trainer(ToyTask(), Net(), Accelerator(cpu=True), TrainSettings(), '/nonexistent',
                dict(type='SGD', lr=0.1))
