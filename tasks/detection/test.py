"""Evaluate a detection model with the mmengine Runner, like the framework's ``tools/test.py``:

    python tasks/detection/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out OUT] \
        [--show-dir DIR] [--cfg-options k=v ...] [--launcher pytorch] [--tta]

CONFIG + CHECKPOINT of a distillation run (``work_dirs/.../iter_N.pth``): the student and
the teacher are evaluated, each labelled; the student config + checkpoint written by
``export.py``: the plain model, as the framework's ``tools/test.py`` evaluates it.
"""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

from distill.engines.mmengine.evaluate import test  # noqa: E402
from distill.engines.core.cli_errors import run_entry_point  # noqa: E402

if __name__ == '__main__':
    run_entry_point(test, 'Evaluate a detector (student and teacher of a distillation checkpoint)')
