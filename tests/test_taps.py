import pytest
import torch
from torch import nn

from distill.taps import FeatureTaps, TapPathError, find_auto_taps, probe_strides


class TwoOutputs(nn.Module):
    def forward(self, x):
        return x * 2, x + 1


class First(nn.Module):
    def forward(self, pair):
        return pair[0]


def _net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                         nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU()),
                         TwoOutputs(), First(), nn.AdaptiveAvgPool2d(1))


def test_records_only_while_recording_and_holds_nothing_after():
    net = _net()
    taps = FeatureTaps(net, ['1', dict(path='3', index=1)])
    x = torch.randn(2, 3, 8, 8)
    net(x)  # outside recording: nothing kept
    assert taps._recorded is None
    with taps.recording() as feats:
        net(x)
    assert set(feats) == {'1', '3[1]'}
    assert feats['1'].shape == (2, 4, 8, 8)
    torch.testing.assert_close(feats['3[1]'], net[2](net[1](net[0](x))) + 1)
    assert taps._recorded is None
    taps.remove()
    with taps.recording() as feats:
        net(x)
    assert feats == {}


def test_unknown_path_names_closest_paths():
    net = nn.Sequential()
    net.add_module('layer1', nn.Conv2d(3, 3, 1))
    net.add_module('layer2', nn.Conv2d(3, 3, 1))
    with pytest.raises(TapPathError) as err:
        FeatureTaps(net, ['layer3'], owner='student')
    message = str(err.value)
    assert "student has no module at tap path 'layer3'" in message
    assert 'layer1' in message and 'layer2' in message


def test_tuple_output_needs_index_and_index_in_range():
    net = _net()
    taps = FeatureTaps(net, ['3'])
    with pytest.raises(TypeError, match='give the tap an index'), taps.recording():
        net(torch.randn(1, 3, 8, 8))
    taps = FeatureTaps(net, [dict(path='3', index=5)])
    with pytest.raises(IndexError, match='only 2 items'), taps.recording():
        net(torch.randn(1, 3, 8, 8))


def test_auto_taps_pick_last_module_per_stride():
    net = _net()
    strides = probe_strides(net, lambda m: m(torch.zeros(1, 3, 16, 16)), 16)
    # stride 1: the ReLU after the first conv, not the conv before it; the pooled 1x1 map is
    # ignored.
    assert strides[1][0] == '1'
    assert strides[2][0] == '4'  # the last module at stride 2 (the tuple is skipped)
    assert 16 not in strides
    # a container finishes after its children, so a stage wins over its last block
    stage = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU()),
                          nn.AdaptiveAvgPool2d(1))
    assert probe_strides(stage, lambda m: m(torch.zeros(1, 3, 8, 8)), 8)[2][0] == '0'
    pairs = find_auto_taps(strides, strides)
    assert [(p['student'], p['stride']) for p in pairs] == [('4', 2)]
    with pytest.raises(ValueError, match='no stage at a stride >= 2'):
        find_auto_taps({1: ('a', None)}, {4: ('b', None)})


def test_auto_taps_pair_stages_from_the_deepest():
    """A CIFAR-style student (stages at strides 1, 2, 4) and an ImageNet-style teacher (a stem
    at 2, stages at 4, 8, 16): the last stages pair, not the equal strides (stride matching
    gave student layer2 -> the teacher's stem ReLU and layer3 -> its first stage)."""
    student = {1: ('layer1', None), 2: ('layer2', None), 4: ('layer3', None)}
    teacher = {2: ('relu', None), 4: ('layer1', None), 8: ('layer2', None), 16: ('layer3', None)}
    pairs = find_auto_taps(student, teacher)
    assert [(p['student'], p['teacher']) for p in pairs] == [('layer2', 'layer2'),
                                                             ('layer3', 'layer3')]
    assert [(p['stride'], p['teacher_stride']) for p in pairs] == [(2, 8), (4, 16)]
