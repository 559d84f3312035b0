"""Export the student of a segmentation distillation run as a plain MMSegmentation model:

    python tasks/segmentation/export.py CONFIG work_dirs/shapes_seg/adm_online/iter_400.pth \
        student.pth [--cfg-options k=v ...]

writes ``student.pth`` and ``student.py`` (a plain MMSegmentation config, no ``distill``);
``mmseg.apis.init_model('student.py', 'student.pth')`` and MMSegmentation's ``tools/test.py``
load them.
"""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

from distill.engines.mmengine.export import export_main  # noqa: E402
from distill.engines.core.cli_errors import run_entry_point  # noqa: E402

if __name__ == '__main__':
    run_entry_point(export_main, 'Export the student of a segmentation distillation checkpoint')
