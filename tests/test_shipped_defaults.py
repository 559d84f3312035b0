"""Defaults live in one place: every shipped segmentation, detection and diffusion ADM config
takes the ADM class's weights, temperature and warm-up (the ones the real-data benchmarks
support, README "Results on real images" and "Diffusion > Results on Fashion-MNIST"); only kd may
differ (detectors have no logits tensor)."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# the configs that name ADM, or inherit an ADM config (its name says so): loading the others
# (mmdet:: bases) costs seconds each and can hold no ADM distiller
CONFIGS = sorted(str(p) for task in ('segmentation', 'detection', 'diffusion')
                 for p in (REPO / 'configs' / task).rglob('*.py')
                 if '_base_' not in p.parts and ('ADM' in p.read_text() or 'adm' in p.name))


def _adm_distillers(cfg):
    model = cfg.get('model') or {}
    # mmengine configs keep it in the model, diffusion configs at the top level
    distiller = ((model.get('distiller') if isinstance(model, dict) else None)
                 or cfg.get('distiller'))
    while isinstance(distiller, dict):
        if distiller.get('type') == 'ADM':
            yield distiller
        distiller = distiller.get('base')  # SoKD wraps its base


def test_the_adm_class_defaults_are_the_measured_ones():
    from distill.distillers.adm import ADM
    import inspect
    assert ADM.default_loss_weights == dict(task=1.0, kd=1.0, co=0.1, di=0.01)
    params = inspect.signature(ADM.__init__).parameters
    assert params['temperature'].default == 1.0 and params['warmup'].default == 0.3
    assert params['tau'].default == 1.0


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: str(Path(p).relative_to(REPO)))
def test_shipped_adm_configs_take_the_class_defaults(path):
    pytest.importorskip('mmseg')
    from mmengine.config import Config
    import distill.engines.mmengine  # noqa: F401  (mmdet:: configs without pkg_resources)
    cfg = Config.fromfile(path)
    distillers = list(_adm_distillers(cfg))
    assert distillers or 'adm' not in Path(path).name, f'{path}: no ADM distiller found'
    for distiller in distillers:
        weights = dict(distiller.get('loss_weights') or {})
        assert set(weights) <= {'kd'}, f'{path}: loss_weights {weights} depart from ADM\'s'
        for key in ('temperature', 'warmup', 'tau', 'tau_schedule', 'task_shares'):
            assert key not in distiller, f'{path} sets {key}: the class default is measured'
