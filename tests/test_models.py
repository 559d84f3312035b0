"""The classification model zoo: registry names, logits shape, ``forward_head`` hand-over."""
import sys
import types

import pytest
import torch
import torch.nn as nn

from distill.models import build_model
from distill.registry import MODELS

ZOO = ['resnet8', 'resnet14', 'resnet20', 'resnet32', 'resnet44', 'resnet56', 'resnet110',
       'resnet8x4', 'resnet32x4', 'wrn_16_1', 'wrn_16_2', 'wrn_40_1', 'wrn_40_2', 'tiny_cnn']

# Parameter counts with 100 classes, as published for the RepDistiller (CRD) models: the
# architectures are the same, layer for layer.
REFERENCE_PARAMS = {'resnet8x4': 1_233_540, 'resnet32x4': 7_433_860, 'resnet56': 861_620,
                    'resnet110': 1_736_564, 'wrn_40_2': 2_255_156, 'wrn_16_2': 703_284}


def test_every_variant_is_registered():
    assert set(ZOO) <= set(MODELS.module_dict)


def _head_input_feature(model, images):
    """Output of the module named by ``model.head_input``, read with a forward hook."""
    captured = []
    module = dict(model.named_modules())[model.head_input]
    handle = module.register_forward_hook(lambda mod, args, output: captured.append(output))
    try:
        logits = model(images)
    finally:
        handle.remove()
    return captured[0], logits


@pytest.mark.parametrize('name', ZOO)
def test_logits_shape_and_forward_head_matches_forward(name):
    torch.manual_seed(0)
    model = build_model(dict(type=name, num_classes=7)).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feature, logits = _head_input_feature(model, images)
        assert logits.shape == (2, 7)
        assert feature.dim() == 4 and feature.shape[-1] == 8  # stride 4 on 32x32
        torch.testing.assert_close(model.forward_head(feature), logits)


@pytest.mark.parametrize('name, expected', sorted(REFERENCE_PARAMS.items()))
def test_parameter_count_matches_reference(name, expected):
    model = build_model(dict(type=name, num_classes=100))
    assert sum(p.numel() for p in model.parameters()) == expected


def test_no_inplace_relu_so_hooked_features_stay_intact():
    for name in ('resnet8', 'wrn_16_1', 'tiny_cnn'):
        model = build_model(dict(type=name))
        assert not any(getattr(m, 'inplace', False) for m in model.modules()), name


def test_convs_use_kaiming_fan_out_init():
    torch.manual_seed(0)
    conv = build_model(dict(type='resnet32x4')).layer3[0].conv2  # 3x3, 256 -> 256
    expected_std = (2.0 / (3 * 3 * 256)) ** 0.5
    assert abs(conv.weight.std().item() / expected_std - 1) < 0.05


def test_defaults_and_extra_kwargs():
    assert build_model(dict(type='resnet8')).fc.out_features == 100
    assert build_model(dict(type='tiny_cnn')).fc.out_features == 10
    tiny = build_model(dict(type='tiny_cnn', num_classes=6, width=8, in_channels=1))
    assert tiny(torch.randn(2, 1, 32, 32)).shape == (2, 6)
    assert tiny.fc.in_features == 32


def test_gradients_reach_every_parameter():
    """Every parameter gets a nonzero gradient (a parameter left out of the graph has none, one
    behind a dead path a zero one)."""
    torch.manual_seed(0)
    model = build_model(dict(type='wrn_16_1', num_classes=5))
    generator = torch.Generator().manual_seed(1)
    logits = model(torch.randn(2, 3, 32, 32, generator=generator))
    (logits * torch.randn(2, 5, generator=generator)).sum().backward()
    dead = [name for name, p in model.named_parameters()
            if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert dead == []


def test_module_passes_through_and_unknown_name_suggests():
    module = nn.Linear(2, 2)
    assert build_model(module) is module
    assert isinstance(build_model(dict(type='resnet8', num_classes=3)), nn.Module)
    with pytest.raises(KeyError, match='resnet8x4'):
        build_model(dict(type='resnet8x5'))


def test_timm_missing_says_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'timm', None)  # makes `import timm` raise ImportError
    with pytest.raises(ImportError, match='pip install timm'):
        build_model(dict(type='timm/resnet18', num_classes=10, pretrained=False))


def test_timm_name_is_stripped_and_head_input_set(monkeypatch):
    calls = []

    def create_model(name, **kwargs):
        calls.append((name, kwargs))
        model = nn.Sequential()
        model.feature_info = [dict(module='layer3'), dict(module='layer4')]
        return model

    monkeypatch.setitem(sys.modules, 'timm', types.SimpleNamespace(create_model=create_model))
    model = build_model(dict(type='timm/resnet18', num_classes=10, pretrained=False))
    assert calls == [('resnet18', dict(num_classes=10, pretrained=False))]
    assert model.head_input == 'layer4'


def test_a_unet_builds_from_the_zoo_without_the_diffusion_adapter():
    """Registration has no import-order side effect: the UNet builders are the zoo's, so a
    config builds its networks before (or without) the diffusion adapter being imported."""
    import subprocess
    import sys
    code = ("import sys\n"
            "from distill.models import build_model\n"
            "unet = build_model(dict(type='UNet2DModel', sample_size=8, in_channels=1,\n"
            "    out_channels=1, block_out_channels=(8, 8), layers_per_block=1,\n"
            "    norm_num_groups=4,\n"
            "    down_block_types=('DownBlock2D', 'DownBlock2D'),\n"
            "    up_block_types=('UpBlock2D', 'UpBlock2D')))\n"
            "assert type(unet).__name__ == 'UNet2DModel'\n"
            "assert 'distill.adapters.diffusers' not in sys.modules, 'the adapter was imported'\n")
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
