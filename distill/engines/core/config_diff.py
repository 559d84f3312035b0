"""What a resume changes: the config the saved state was trained with against the new one, in
every engine.

A resumed run continues the saved weights and optimiser under the config it is given now.
Changing a loss weight, the data, the accumulation or the batch size on the way is legitimate,
but it used to go on without a word, and the work dir's config dump was then rewritten with
the new values, leaving no record that the earlier stretch ran with the old ones. So, on
resume (``RunConfig``):

* the config in force when the checkpoint was written (the work dir's dump of the earlier
  run, or the record of the latest stretch before the checkpoint; the mmengine Runner's
  checkpoints carry it themselves) is compared with the new one, key by flattened dotted key
  (``distiller.loss_weights.co``, ``param_scheduler.0.end``), and every change is logged as a
  warning in the run log, ``old -> new``;
* a change that makes the saved state meaningless is refused with one line naming the key
  (``ConfigError``): the networks' architecture (any key of the student's or the teacher's
  config but those that leave the weights' shapes alone: initialisation, losses, dropout,
  train/test settings) and the number of classes;
* the first run's dump stays as it is, and a resumed run whose config differs writes its own
  beside it as ``<dump stem>.resumed-at-N.py`` (N the step, iteration or epoch it resumed
  from): the work dir keeps the config of every stretch.

Keys that name where this run is rather than how it trains (its work dir, the resume flag) are
the engine's ``ignored``. A change of the number of processes is not a config key: the engines
name it themselves (``Trainer.resume``, ``ResumeHook``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from distill.engines.core.targets import same_file

#: sub-keys of a network's config that leave the shapes of its weights alone: how it is
#: initialised, its losses, dropout and its train/test settings
NOT_ARCHITECTURE = ('init_cfg', 'pretrained', 'checkpoint', 'train_cfg', 'test_cfg',
                    'data_preprocessor', 'dropout', 'dropout_ratio', 'drop_rate',
                    'drop_path_rate', 'loss*', 'align_corners')


class _Unset:
    def __repr__(self):
        return '(unset)'


UNSET = _Unset()


def _plain(value):
    """Tuples as lists, so that a config and its dump read back compare equal."""
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def flatten(cfg) -> dict:
    """``{dotted key: value}`` of a config (an mmengine ``Config`` or a dict): nested dicts by
    key, lists of dicts by index (``param_scheduler.0.end``); other lists stay whole values."""
    flat = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            if not value and prefix:
                flat[prefix] = {}
            for key, item in value.items():
                walk(f'{prefix}.{key}' if prefix else str(key), item)
        elif isinstance(value, (list, tuple)) and value and all(
                isinstance(item, dict) for item in value):
            for index, item in enumerate(value):
                walk(f'{prefix}.{index}', item)
        else:
            flat[prefix] = _plain(value)
    walk('', cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg or {}))
    return flat


def _matches(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + '.') for p in prefixes)


@dataclass(frozen=True)
class Change:
    key: str
    old: object
    new: object
    refused: str | None = None   # why the saved state cannot take it (None: allowed)

    def describe(self) -> str:
        return f'{self.key}: {_short(self.old)} -> {_short(self.new)}'


def _short(value, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + '...'


@dataclass
class ResumeRules:
    """What an engine's resume may change. ``networks``: the keys of the network configs
    (``distiller.student``); ``ignored``: keys that say where this run is, not how it trains
    (the work dir, the resume flag); ``class_counts``: leaf names of a number of classes;
    ``fresh_hint``: how to start a fresh run instead, for the refusal."""
    networks: tuple = ()
    ignored: tuple = ()
    not_architecture: tuple = NOT_ARCHITECTURE
    class_counts: tuple = ('num_classes',)
    fresh_hint: str = 'start a fresh run in another work dir'

    def why_refused(self, key: str) -> str | None:
        parts = key.split('.')
        if parts[-1] in self.class_counts:
            return 'the number of classes'
        for network in self.networks:
            if _matches(key, [network]):
                below = parts[len(network.split('.')):]
                if not any(re.fullmatch(pattern.replace('*', '.*'), part)
                           for part in below for pattern in self.not_architecture):
                    return "the networks' architecture"
        return None


def diff(old: dict, new: dict, rules: ResumeRules) -> list[Change]:
    """The changed keys of two flattened configs (``flatten``), sorted, each with the reason
    it is refused (or None)."""
    changes = []
    for key in sorted(set(old) | set(new)):
        if _matches(key, rules.ignored):
            continue
        before, after = old.get(key, UNSET), new.get(key, UNSET)
        if before is UNSET or after is UNSET or before != after:
            changes.append(Change(key, before, after, rules.why_refused(key)))
    return changes


def record_name(dump_name: str, at: int) -> str:
    """``config.py`` -> ``config.resumed-at-12.py``."""
    return f'{Path(dump_name).stem}.resumed-at-{int(at)}.py'


def record_pattern(dump_name: str) -> str:
    """The glob of a dump's records (``config.resumed-at-*.py``): deleted with the run."""
    return f'{Path(dump_name).stem}.resumed-at-*.py'


def config_records(work_dir, dump_name: str) -> dict[int, Path]:
    """``{N: path}`` of the config records of ``work_dir``: the first run's dump at 0, each
    ``<stem>.resumed-at-N.py`` at N."""
    work_dir = Path(work_dir)
    found = {}
    if (work_dir / dump_name).is_file():
        found[0] = work_dir / dump_name
    pattern = re.compile(re.escape(Path(dump_name).stem) + r'\.resumed-at-(\d+)\.py$')
    if work_dir.is_dir():
        for path in work_dir.iterdir():
            match = pattern.match(path.name)
            if match and path.is_file():
                found[int(match.group(1))] = path
    return found


def read_config(path=None, text: str | None = None) -> dict:
    """A config file (or its text) flattened; read without importing its custom modules."""
    from mmengine.config import Config
    if text is not None:
        import os
        import tempfile
        with tempfile.NamedTemporaryFile('w', suffix='.py', delete=False) as file:
            file.write(text)
        try:
            return flatten(Config.fromfile(file.name, import_custom_modules=False))
        finally:
            os.unlink(file.name)
    return flatten(Config.fromfile(str(path), import_custom_modules=False))


@dataclass
class RunConfig:
    """The config of this stretch of a run, checked against the earlier one on resume and
    recorded in the work dir (see the module). ``cfg``: the run's config (an mmengine
    ``Config``: only those are dumped); ``dump_name``: the name of the first run's dump in
    ``work_dir``."""
    cfg: object
    work_dir: Path
    rules: ResumeRules
    dump_name: str = 'config.py'
    resumed_at: int | None = None
    changes: list = field(default_factory=list)
    unchecked: bool = False  # resumed where the earlier run left no config

    def check_resume(self, at: int, what: str = 'step', warn=None, saved_text=None,
                     saved_name: str | None = None) -> list[Change]:
        """Compare the config the checkpoint at ``at`` was trained with (``saved_text``, or
        the latest record of the work dir before ``at``) with this run's: log every change
        with ``warn`` (main process; None: silent), raise ``ConfigError`` naming the first
        refused one. Call on every process: all of them stop alike."""
        self.resumed_at = int(at)
        warn = warn or (lambda message: None)
        records = config_records(self.work_dir, self.dump_name)
        earlier = [n for n in records if n < at or n == 0]
        if saved_text is not None:
            old, source = read_config(text=saved_text), saved_name or 'the checkpoint'
        elif earlier:
            old, source = read_config(records[max(earlier)]), str(records[max(earlier)])
        else:
            warn(f'resume from {what} {at}: the earlier run left no config ({self.dump_name} '
                 f'in {self.work_dir}), so what this run changes cannot be checked')
            self.unchecked = True  # this stretch's config is recorded all the same
            return []
        self.changes = diff(old, flatten(self.cfg), self.rules)
        refused = [c for c in self.changes if c.refused]
        if self.changes:
            warn(f'resume from {what} {at}: {len(self.changes)} config key(s) differ from '
                 f'those the checkpoint was trained with ({source}); '
                 + ('refused:' if refused else 'continuing with the new values:'))
            for change in self.changes:
                warn(f'  {change.describe()}' + (f'  (refused: {change.refused})'
                                                 if change.refused else ''))
        if refused:
            from distill.config_checks import ConfigError
            first = refused[0]
            more = (f' (and {len(refused) - 1} more: '
                    f'{", ".join(c.key for c in refused[1:4])}{", ..." * (len(refused) > 4)})'
                    if len(refused) > 1 else '')
            raise ConfigError(
                f'--resume: {first.key} changed ({_short(first.old)} -> {_short(first.new)})'
                f'{more} from the config the checkpoint of {what} {at} was trained with '
                f'({source}): {first.refused} cannot change under saved weights. Resume with '
                f'the earlier value, or {self.rules.fresh_hint}')
        return self.changes

    def write(self, main: bool = True, warn=None) -> Path | None:
        """The record of this stretch (main process): the dump of a fresh run, or
        ``<stem>.resumed-at-N.py`` for a resumed one whose config differs (or whose stretch
        from N was recorded before: the newest stretch from N wins); the first run's dump
        is never rewritten by a resume. Returns the file written."""
        if not main or not hasattr(self.cfg, 'dump'):
            return None
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.resumed_at is None:
            path = self.work_dir / self.dump_name
        else:
            path = self.work_dir / record_name(self.dump_name, self.resumed_at)
            running = getattr(self.cfg, 'filename', None)
            if (not (self.changes or self.unchecked) and not path.exists()) or (
                    running and same_file(path, running)):
                return None  # nothing to record, or the record is the config being run
        self.cfg.dump(str(path))
        if self.resumed_at is not None and (self.changes or self.unchecked) and warn:
            warn(f"resume: this stretch's config is recorded in {path} (the first run's stays "
                 f'in {self.dump_name})')
        return path
