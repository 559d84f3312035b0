"""``--cfg-options`` of the mmengine entry points (train, test, export), merged as the
frameworks' own tools merge them, and one more rule: ``data_root=NEW`` moves the data.

A config's ``data_root`` is a variable of the file, substituted into its dataloaders (and an
evaluator's ``ann_file = data_root + '...'``) when the file is read; mmengine's merge then
changes the variable alone, and the run kept reading the old root without a word. So, when
the options give a top-level ``data_root`` and the config has one, every dataloader data set
(through ``RepeatDataset``'s ``dataset``, ``ConcatDataset``'s ``datasets``) whose ``data_root``
is the old value gets the new one, every ``ann_file`` under the old root (dataloaders,
``val_evaluator``, ``test_evaluator``, metrics wrapped in ``distill.StudentMetric`` /
``TeacherMetric``) moves with it, and the log lists what moved. A key the options set
explicitly (``train_dataloader.dataset.data_root=...``) is not the old value, so it stays.
``prepare_data`` keeps its root: a synthetic set is written only where the loaders read it.
"""
from __future__ import annotations

import logging

from mmengine.logging import print_log

LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
EVALUATORS = ('val_evaluator', 'test_evaluator')


def _moved_path(value, old: str, new: str):
    """``value`` with the ``old`` root replaced by ``new`` if it lies under it, else None."""
    if not isinstance(value, str) or not value.startswith(old):
        return None
    rest = value[len(old):]
    if rest and not old.endswith('/') and not rest.startswith('/'):
        return None  # 'data/x2/...' does not lie under 'data/x'
    if old.endswith('/') and rest and not new.endswith('/'):
        new += '/'
    return new + rest


def _move_ann_files(where: str, node, old: str, new: str, moved: list) -> None:
    """Every ``ann_file`` under ``node`` (dicts and lists, nested) that lies under ``old``."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = _moved_path(value, old, new) if key == 'ann_file' else None
            if path is not None:
                node[key] = path
                moved.append(f'{where}.{key}')
            elif isinstance(value, (dict, list, tuple)):
                _move_ann_files(f'{where}.{key}', value, old, new, moved)
    elif isinstance(node, (list, tuple)):
        for i, item in enumerate(node):
            _move_ann_files(f'{where}[{i}]', item, old, new, moved)


def _move_datasets(where: str, dataset, old: str, new: str, moved: list) -> None:
    if not isinstance(dataset, dict):
        return
    if dataset.get('data_root') == old:
        dataset['data_root'] = new
        moved.append(f'{where}.data_root')
    path = _moved_path(dataset.get('ann_file'), old, new)
    if path is not None:
        dataset['ann_file'] = path
        moved.append(f'{where}.ann_file')
    _move_datasets(f'{where}.dataset', dataset.get('dataset'), old, new, moved)
    for i, inner in enumerate(dataset.get('datasets') or ()):
        _move_datasets(f'{where}.datasets[{i}]', inner, old, new, moved)


def merge_cfg_options(cfg, options: dict | None) -> list[str]:
    """Merge ``options`` (``{dotted key: value}``) into ``cfg``; a ``data_root`` among them
    moves the data sets and annotation files that read the config's own ``data_root`` (see the
    module). Returns the keys it moved (also logged)."""
    if not options:
        return []
    old = cfg.get('data_root')
    cfg.merge_from_dict(options)
    new = options.get('data_root')
    if 'data_root' not in options or not isinstance(old, str) or not isinstance(new, str) \
            or new == old:
        return []
    moved = []
    for name in LOADERS:
        _move_datasets(f'{name}.dataset', (cfg.get(name) or {}).get('dataset'), old, new, moved)
    for name in EVALUATORS:
        _move_ann_files(name, cfg.get(name), old, new, moved)
    print_log(f'--cfg-options data_root={new}: what read the config\'s data_root {old} now '
              f'reads {new}: {", ".join(moved) or "nothing did"}', logger='current',
              level=logging.INFO if moved else logging.WARNING)
    return moved
