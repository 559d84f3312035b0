"""Every shipped segmentation config trains two iterations and validates, through
``tasks/segmentation/train.py``, with the networks it names (ResNet-101 teachers included), on
stand-in Cityscapes (``leftImg8bit``/``gtFine`` with labelTrainIds) and stand-in
pretrained weights in torch.hub's cache (README, "Segmentation (MMSegmentation) and detection
(MMDetection)"). A new config is covered by being added; a wrapper config cuts the sizes
(crops of 64x128) and the length, nothing else (``config_runs.py``).
"""
import pytest

from config_runs import config_id, run_mm_config, shipped_configs

pytestmark = pytest.mark.end_to_end

pytest.importorskip('mmseg')

CONFIGS = shipped_configs('segmentation')


@pytest.mark.parametrize('config', CONFIGS, ids=[config_id(p) for p in CONFIGS])
def test_shipped_config_trains_and_validates(config, tmp_path):
    run_mm_config(config, tmp_path)
