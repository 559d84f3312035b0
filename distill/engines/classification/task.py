"""The classification hooks of the trainer core: seeded per-process batches, augmentation on
the device, evaluation of student and teacher, SoKD's policy in the records, the networks at
the end (``student.pth``, ``teacher.pth``).

Every random draw of an epoch is a function of ``(seed, epoch, stream, rank)``: the shuffle of
the training set (``ShardedBatches``), the augmentation of its batches, the separate shuffle
and augmentation of the batches SoKD's arch step validates on; so epoch ``e`` draws the same
whether the run started at epoch 1 or was resumed at the end of epoch ``e - 1`` (classification
checkpoints at epoch ends only).
"""
from __future__ import annotations

import logging

from distill.engines.classification.data import (BatchPreparer, ShardedBatches, hold_on_device,
                                                 make_loader)
from distill.engines.classification.metrics import evaluate_classifiers
from distill.engines.core.data_order import derive_seed
from distill.engines.core.task import Task

logger = logging.getLogger('distill.classification')


class ClassificationTask(Task):
    def __init__(self, datasets: dict, data_cfg: dict, seed: int, accelerator, work_dir,
                 channels_last: bool = False):
        self.datasets, self.data_cfg, self.seed = datasets, data_cfg, seed
        self.accelerator, self.work_dir = accelerator, work_dir
        rank, world = accelerator.process_index, accelerator.num_processes
        self.rank = rank
        batch_size = int(data_cfg.get('batch_size', 64))
        size = len(datasets['train'])
        self.train_batches = ShardedBatches(size, batch_size, True, seed, rank, world, 'train')
        self.arch_shards = ShardedBatches(size, batch_size, True, seed, rank, world, 'arch')
        self.val_batches = ShardedBatches(
            len(datasets['val']), int(data_cfg.get('val_batch_size') or batch_size), False,
            seed, rank, world, 'val')
        self.preparer = BatchPreparer(accelerator.device, data_cfg.get('augment'),
                                      data_cfg.get('normalize'), channels_last)
        # in-memory sets held on the device: batches gathered there (data.on_device)
        on_device = bool(data_cfg.get('on_device', True))
        self.held = {split: hold_on_device(dataset, accelerator.device, on_device)
                     for split, dataset in datasets.items()}
        self.augment_generator = None
        self.offline_teacher_metrics = None  # a frozen teacher is evaluated once per run

    def _loader(self, split, batch_lists, what, epoch):
        return make_loader(self.datasets[split], batch_lists, what, epoch,
                           int(self.data_cfg.get('num_workers', 0)),
                           pin_memory=self.accelerator.device.type == 'cuda',
                           held=self.held.get(split))

    # ------------------------------------------------------------------ training batches
    def train_loader(self, trainer, epoch):
        self.augment_generator = self.preparer.generator(
            derive_seed(self.seed, epoch, 'augment', self.rank))
        return self._loader('train', self.train_batches.batches(epoch), 'training', epoch)

    def prepare_batch(self, trainer, batch):
        return self.preparer(batch, self.augment_generator)

    def arch_batches(self, trainer, epoch):
        generator = self.preparer.generator(derive_seed(self.seed, epoch, 'arch-aug',
                                                        self.rank))
        while True:  # as many passes as the arch steps need
            for batch in self._loader('train', self.arch_shards.batches(epoch), 'architecture',
                                      epoch):
                yield self.preparer(batch, generator)

    # ------------------------------------------------------------------ evaluation
    def _val_batches(self):
        loader = self._loader('val', self.val_batches.batches(0), 'validation', 0)
        return (self.preparer(batch) for batch in loader)

    def evaluate_networks(self, models: dict) -> dict:
        """``{name: {top1, top5, ece, num_samples}}`` of ``models`` on the val set."""
        acc = self.accelerator
        return evaluate_classifiers(models, self._val_batches(), lambda t: acc.reduce(t, 'sum'),
                                    acc.autocast, device=acc.device)

    def evaluate(self, trainer) -> dict:
        model = trainer.model
        online = getattr(model, 'online', True)
        models = {'student': model.student, **({'teacher': model.teacher} if online else {})}
        summaries = self.evaluate_networks(models)
        if not online:
            if self.offline_teacher_metrics is None:
                self.offline_teacher_metrics = self.evaluate_networks({'teacher': model.teacher})[
                    'teacher']
            summaries['teacher'] = self.offline_teacher_metrics
        record = {'val/num_samples': summaries['student']['num_samples']}
        for name, summary in summaries.items():
            record.update({f'val/{name}/{k}': v for k, v in summary.items()
                           if k != 'num_samples'})
        return record

    def data_summary(self) -> str:
        return (f"{len(self.datasets['train'])} training and {len(self.datasets['val'])} val "
                f"images, batches of {self.train_batches.batch_size} per process")

    def end_of_epoch(self, trainer, record) -> None:
        from distill.sokd.viz import record_policy
        # SoKD: the policy in metrics.json and TensorBoard, its chart after the search
        record_policy(trainer.model, record, trainer.epoch,
                      self.work_dir if trainer.is_main else None,
                      last_epoch=trainer.settings.epochs)

    def describe(self, record) -> str:
        parts = []
        for name in ('student', 'teacher'):
            if f'val/{name}/top1' in record:
                parts.append(f"{name} top1 {record[f'val/{name}/top1']:.2f} "
                             f"top5 {record[f'val/{name}/top5']:.2f} "
                             f"ECE {record[f'val/{name}/ece']:.2f}")
        if 'epoch_time_s' in record:
            parts.append(f"{record['epoch_time_s']:.1f}s")
        return ' | '.join(parts)

    # ------------------------------------------------------------------ the end
    def finish(self, trainer):
        if trainer.is_main:  # the two trained networks, loadable alone (teacher_ckpt=...)
            from distill.checkpoint import save_atomic
            save_atomic(trainer.model.student.state_dict(), self.work_dir / 'student.pth')
            save_atomic(trainer.model.teacher.state_dict(), self.work_dir / 'teacher.pth')
        return None

