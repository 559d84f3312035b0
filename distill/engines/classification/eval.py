"""Evaluate trained classifiers on the config's val set: ``tasks/classification/test.py``.

The networks come from a training run's outputs: a ``checkpoint-N`` folder (both networks, as
the distiller held them), or ``student.pth`` / ``teacher.pth`` (a network's state dict, as the
run writes them at its end and ``teacher_ckpt`` takes them). Metrics are the training's own
(top-1, top-5, ECE of ``classification_metrics``) on the same preprocessing.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger('distill.classification')


def load_networks(distiller, checkpoint, teacher=None) -> list[str]:
    """Load ``checkpoint`` into ``distiller`` (a folder: both networks; a file: the student)
    and ``teacher`` (a file) into its teacher; returns the names of the networks loaded."""
    from distill.checkpoint import (describe_differences, load_model_weights,
                                    state_dict_differences)
    path = Path(checkpoint)
    if path.is_dir():
        from safetensors.torch import load_file
        from distill.engines.core.checkpoints import read_verified_state
        read_verified_state(path)  # every file against its SHA-256
        weights = path / 'model.safetensors'
        if not weights.is_file():
            raise FileNotFoundError(f'{path} has no model.safetensors: not a checkpoint-N '
                                    f'folder of this engine')
        state = load_file(weights)
        differences = state_dict_differences(distiller.state_dict(), state)
        differences['missing'] = [k for k in differences['missing']
                                  if k.startswith(('student.', 'teacher.'))]
        message = describe_differences(weights, differences, "the config's distiller")
        if message:  # before anything is loaded or reported
            raise ValueError(message)
        distiller.load_state_dict(state, strict=False)
        loaded = ['student', 'teacher']
    else:
        load_model_weights(distiller.student, path)
        loaded = ['student']
    if teacher is not None:
        load_model_weights(distiller.teacher, teacher)
        loaded = sorted(set(loaded) | {'teacher'})
    return loaded


def evaluate_checkpoint(cfg, checkpoint, teacher=None, out=None) -> dict:
    """``{'student': {top1, top5, ece, num_samples}, ...}`` of the networks loaded from
    ``checkpoint`` (and ``teacher``), on ``cfg.data.val``; written to ``out`` (JSON) if
    given. ``out`` is checked first: never one of the inputs (the config, the checkpoint or a
    file in its folder, the teacher) nor an existing file other than such a metrics JSON."""
    from accelerate import Accelerator

    from distill import build_distiller
    from distill.checkpoint import write_atomic
    from distill.engines.classification.train import (DEFAULT_TRAIN, _cfg_dict,
                                                build_classification_datasets)
    from distill.engines.classification.config import check_classification_config
    from distill.engines.classification.task import ClassificationTask
    from distill.engines.core.targets import check_output, is_json_record
    if out is not None:
        check_output(out, {'the config being run': getattr(cfg, 'filename', None),
                           'the checkpoint': checkpoint, 'the teacher': teacher}, '--out',
                     written_by=lambda p: is_json_record(p, ('checkpoint', 'results')),
                     kind='a metrics JSON of test.py')
    check_classification_config(cfg, DEFAULT_TRAIN)
    data_cfg = _cfg_dict(cfg, 'data')
    datasets = build_classification_datasets(data_cfg)  # train too: the class names
    distiller = build_distiller(cfg['distiller'])
    loaded = load_networks(distiller, checkpoint, teacher)
    accelerator = Accelerator(cpu=bool(_cfg_dict(cfg, 'train').get('cpu', False)))
    distiller.to(accelerator.device).eval()
    task = ClassificationTask(datasets, data_cfg, 0, accelerator, None)
    results = task.evaluate_networks({name: getattr(distiller, name) for name in loaded})
    for name, summary in results.items():
        logger.info('%s: top-1 %.2f top-5 %.2f ECE %.2f on %d images', name, summary['top1'],
                    summary['top5'], summary['ece'], summary['num_samples'])
    if out is not None:
        write_atomic(json.dumps(dict(checkpoint=str(checkpoint), teacher=teacher,
                                     results=results), indent=1).encode(), out)
    return results
