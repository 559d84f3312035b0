"""Train a segmentation distillation config (or any MMSegmentation config) with the mmengine
Runner, exactly like MMSegmentation's ``tools/train.py``:

    python tasks/segmentation/train.py configs/segmentation/shapes/adm_online.py \
        [--work-dir DIR] [--resume [CHECKPOINT] | --overwrite] [--amp] [--auto-scale-lr] \
        [--cfg-options k=v ...] [--launcher pytorch]
"""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

from distill.engines.mmengine.launch import train  # noqa: E402
from distill.engines.core.cli_errors import run_entry_point  # noqa: E402

if __name__ == '__main__':
    run_entry_point(train, 'Train a segmentor with knowledge distillation')
