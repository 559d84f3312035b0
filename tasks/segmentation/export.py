"""Export the student of a segmentation distillation run as a plain MMSegmentation model:

    python tasks/segmentation/export.py CONFIG work_dirs/adm_online/iter_400.pth student.pth

writes ``student.pth`` and ``student.py``; ``mmseg.apis.init_model('student.py', 'student.pth')``
loads them.
"""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

from distill.mm.export import export_main  # noqa: E402

if __name__ == '__main__':
    export_main('Export the student of a segmentation distillation checkpoint')
