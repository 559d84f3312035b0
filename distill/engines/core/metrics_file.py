"""``metrics.json`` beside the checkpoints: one record per evaluation, rewritten atomically."""
from __future__ import annotations

import json
import os
from pathlib import Path


class MetricsFile:
    """A JSON list of records; ``append`` rewrites the file atomically. On resume, records past
    the resumed point are dropped with ``truncate``, so the file matches the run."""

    def __init__(self, path):
        self.path = Path(path)
        self.records: list[dict] = []
        if self.path.is_file():
            self.records = json.loads(self.path.read_text() or '[]')

    def append(self, record: dict) -> None:
        self.records.append(record)
        self._write()

    def truncate(self, key: str, last_value) -> None:
        """Keep only the records whose ``key`` is at most ``last_value``."""
        self.records = [r for r in self.records if r.get(key, last_value) <= last_value]
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f'.{self.path.name}.tmp')
        tmp.write_text(json.dumps(self.records, indent=1))
        os.replace(tmp, self.path)


def tracker_scalars(record: dict) -> dict[str, float]:
    """The numbers of a record as tracker scalars: ``<kind>/<key>`` (``val/...`` keys keep their
    name), one level of nested dicts flattened (``final/student_denoising_mse/mean``); the
    step counters and flags left out."""
    prefix = f"{record.get('kind', 'epoch')}/"

    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    scalars = {}
    for key, value in record.items():
        if key in ('epoch', 'global_step', 'step'):
            continue
        name = key if key.startswith('val/') else prefix + key
        if number(value):
            scalars[name] = value
        elif isinstance(value, dict):
            scalars.update({f'{name}/{k}': v for k, v in value.items() if number(v)})
    return scalars
