"""A classifier of the user's own, written the way a PyTorch user writes one (``features``,
``pool``, ``classifier``; ``forward(x) -> logits``), trained through ``distill.build_distiller``
with every registered distiller: a new one is covered by being registered (its cases come from
its signature: online and offline, user paths and ``taps='auto'`` where it has taps, each plain
distiller as SoKD's base with DAM on where it wraps one). Each case takes a step on a dict batch
and one on an ``(inputs, labels)`` tuple, and, for SoKD, an arch step between them.

Also: the head SoKD needs (the class's own ``head_input``/``forward_head``, or the one
``ClassifierAdapter(head_input=...)`` derives; a model with neither is refused when built,
saying what to add), ``total_steps`` given at SoKD's top level, models that are not classifiers
refused in one line, and the user's model named in a config file, registered by a module of the
user's own (``custom_imports``) and trained on an image folder of the user's own through
``tasks/classification/train.py``.
"""
from __future__ import annotations

import inspect
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from distill import DISTILLERS, build_distiller
from distill.adapters import NoHeadError

DISTILLERS.import_from_location()

NUM_CLASSES, SIZE = 5, 16


def stage(c_in, c_out, stride, depth):
    """``depth`` conv-BN-ReLU blocks, the first with ``stride``: in-place ReLUs, as users (and
    torchvision) write them."""
    layers = []
    for i in range(depth):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, stride if i == 0 else 1, 1,
                             bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class MyNet(nn.Module):
    """The user's classifier: three stages (strides 1, 2, 4), global pooling, a linear layer.
    Nothing in it is there for the library."""

    def __init__(self, width=4, depth=1, num_classes=NUM_CLASSES):
        super().__init__()
        self.features = nn.Sequential(stage(3, width, 1, depth),
                                      stage(width, 2 * width, 2, depth),
                                      stage(2 * width, 4 * width, 2, depth))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        x = self.features(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


class MyNetWithHead(MyNet):
    """``MyNet`` with what SoKD asks of a classifier (README, "SoKD"): where its head takes
    over, and the head itself."""

    head_input = 'features'  # the module whose output is the last feature map

    def forward_head(self, feature):
        return self.classifier(torch.flatten(self.pool(feature), 1))


def student(cls=MyNet):
    return cls(width=4, depth=1)


def teacher(cls=MyNet):  # wider and deeper
    return cls(width=8, depth=2)


# the user's own module paths: the second and the last stage of both networks
USER_TAPS = [dict(student='features.1', teacher='features.1'),
             dict(student='features.2', teacher='features.2')]


def _library():
    return sorted(name for name, cls in DISTILLERS.module_dict.items()
                  if cls.__module__.startswith('distill.'))


def _wraps_a_base(cls) -> bool:
    return 'base' in inspect.signature(cls).parameters


def _plain_settings(name):
    """Each setting a plain distiller allows: offline and online, and (with taps) the user's
    paths and 'auto'."""
    taps = (USER_TAPS, 'auto') if DISTILLERS.get(name).uses_taps else (None,)
    return [dict(online=online, **({} if tap is None else dict(taps=tap)))
            for online in (False, True) for tap in taps]


def cases():
    """``(id, name, settings)`` of every case: a plain distiller's settings, or (a distiller
    that wraps a base) each plain distiller as its base, offline and online, with its taps
    alternating between the user's paths and 'auto', DAM on, the head the class's own offline
    and derived by the adapter online."""
    plain = [name for name in _library() if not _wraps_a_base(DISTILLERS.get(name))]
    out = []
    for name in _library():
        if not _wraps_a_base(DISTILLERS.get(name)):
            for settings in _plain_settings(name):
                taps = settings.get('taps')
                tag = '' if taps is None else ('-auto' if taps == 'auto' else '-paths')
                out.append((f"{name}-{'online' if settings['online'] else 'offline'}{tag}",
                            name, settings))
            continue
        for base in plain:
            for online in (False, True):
                settings = dict(base=base, online=online, dam=dict(channels=8),
                                head='adapter' if online else 'class')
                if DISTILLERS.get(base).uses_taps:
                    settings['taps'] = 'auto' if online else USER_TAPS
                out.append((f"{name}-{base}-{'online' if online else 'offline'}", name, settings))
    return out


CASES = cases()


def build(name, settings, total_steps=2):
    """The distiller of a case, from a config dict holding the user's networks."""
    adapter = dict(type='ClassifierAdapter', probe_input_size=SIZE)
    if not _wraps_a_base(DISTILLERS.get(name)):
        return build_distiller(dict(type=name, student=student(), teacher=teacher(),
                                    adapter=adapter, total_steps=total_steps, **settings))
    settings = dict(settings)
    base_name, dam, head = settings.pop('base'), settings.pop('dam'), settings.pop('head')
    cls = MyNetWithHead if head == 'class' else MyNet
    if head == 'adapter':
        adapter['head_input'] = 'auto'
    base = dict(type=base_name, student=student(cls), teacher=teacher(cls), adapter=adapter,
                **settings)
    return build_distiller(dict(type=name, base=base, dam=dam, total_steps=total_steps))


def batches(seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(4, 3, SIZE, SIZE, generator=g)
    labels = torch.randint(0, NUM_CLASSES, (4,), generator=g)
    return dict(inputs=inputs, labels=labels), (inputs, labels)


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def _moved(before, module):
    return any(not torch.equal(a, b.detach()) for a, b in zip(before, module.parameters()))


def test_the_cases_cover_every_registered_distiller():
    assert sorted({name for _, name, _ in CASES}) == _library()
    assert any(name != 'SoKD' and settings.get('taps') == 'auto' for _, name, settings in CASES)


@pytest.mark.parametrize('name,settings', [(name, settings) for _, name, settings in CASES],
                         ids=[case_id for case_id, _, _ in CASES])
def test_every_distiller_trains_a_users_own_classifier(name, settings):
    torch.manual_seed(0)
    distiller = build(name, settings).train()
    arch = list(getattr(distiller, 'arch_parameters', lambda: [])())
    params = [p for p in distiller.parameters()
              if p.requires_grad and not any(p is a for a in arch)]
    optimizer = torch.optim.SGD(params, lr=0.05)
    student_before, teacher_before = _params(distiller.student), _params(distiller.teacher)
    as_dict, as_tuple = batches(0)
    val_dict, _ = batches(1)
    for step, batch in enumerate((as_dict, as_tuple)):
        if arch and step == 1:  # SoKD's search, in between
            assert distiller.wants_arch_step(1, 0)
            arch_optimizer = torch.optim.Adam(arch, lr=0.05)
            arch_optimizer.zero_grad()
            distiller.arch_backward(as_tuple, val_dict)
            assert any(a.grad is not None and a.grad.abs().sum() > 0 for a in arch)
            arch_optimizer.step()
        terms = distiller(batch)
        assert 'student.task' in terms
        if settings.get('dam'):
            assert {'student.dam', 'dam.anchor'} <= set(terms), sorted(terms)
        assert ('teacher.task' in terms) == distiller.online
        for key, value in terms.items():
            assert value.dim() == 0 and bool(torch.isfinite(value)), (key, value)
        optimizer.zero_grad()
        sum(terms.values()).backward()
        optimizer.step()
    assert _moved(student_before, distiller.student)
    assert _moved(teacher_before, distiller.teacher) == distiller.online
    if not distiller.online:
        assert not distiller.teacher.training
    # the two batch forms are one batch: the same terms
    distiller.eval()
    with torch.no_grad():
        torch.manual_seed(3)
        from_dict = distiller(as_dict)
        torch.manual_seed(3)
        from_tuple = distiller(as_tuple)
    assert from_dict.keys() == from_tuple.keys()
    for key in from_dict:
        torch.testing.assert_close(from_tuple[key], from_dict[key], msg=key)


# ------------------------------------------------------------------------- SoKD's head
def _sokd(base='FitNet', cls=MyNet, head_input=None, dam=dict(channels=8), seed=0, **extra):
    torch.manual_seed(seed)
    adapter = dict(type='ClassifierAdapter', probe_input_size=SIZE)
    if head_input is not None:
        adapter['head_input'] = head_input
    taps = dict(taps='auto') if DISTILLERS.get(base).uses_taps else {}
    return build_distiller(dict(type='SoKD', dam=dam, **extra, base=dict(
        type=base, student=student(cls), teacher=teacher(cls), adapter=adapter, online=False,
        **taps)))


@pytest.mark.parametrize('base,remedy', [('FitNet', 'or set dam=None'),
                                         ('KD', 'or wrap FitNet or ADM')])
def test_sokd_refuses_a_classifier_without_a_head_when_built(base, remedy):
    """Refused by build_distiller, before any step, in one line that names the class, the
    module path to give as head_input, forward_head, and the other ways out."""
    with pytest.raises(NoHeadError) as caught:
        _sokd(base)
    message = str(caught.value)
    assert '\n' not in message
    assert "MyNet has no head_input: give the class a `head_input = 'features'` attribute" \
        in message
    assert '`forward_head(feature) -> logits` method' in message
    assert "ClassifierAdapter(head_input='features')" in message
    assert message.endswith(remedy + (', which need no head' if base == 'KD' else ''))


def test_the_readme_shows_the_refusal_as_it_is():
    """README, "SoKD": the message quoted there is the one its MyNet without a head gets."""
    from mm_helpers import REPO
    quoted = [line for line in (REPO / 'README.md').read_text().splitlines()
              if line.startswith("NoHeadError: SoKD's DAM")]
    assert len(quoted) == 1

    class MyNet(nn.Module):  # the README's, without head_input and forward_head
        def __init__(self, width, num_classes=10):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, 2 * width, 3, 2, 1), nn.BatchNorm2d(2 * width),
                nn.ReLU(inplace=True))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(2 * width, num_classes)

        def forward(self, x):
            return self.classifier(torch.flatten(self.pool(self.features(x)), 1))

    with pytest.raises(NoHeadError) as caught:
        build_distiller(dict(type='SoKD', base=dict(type='FitNet', student=MyNet(8),
                                                    teacher=MyNet(32), taps='auto')))
    assert quoted[0] == f'NoHeadError: {caught.value}'


class HeadInputOnly(MyNet):
    head_input = 'features'


def test_a_head_input_without_forward_head_is_named():
    with pytest.raises(NoHeadError, match="HeadInputOnly has no forward_head: give the class a "
                                          "`head_input = 'features'` attribute"):
        _sokd('FitNet', cls=HeadInputOnly)


def test_sokd_with_dam_off_and_a_feature_base_needs_no_head():
    distiller = _sokd('FitNet', dam=None)
    assert distiller.head_taps is None


@pytest.mark.parametrize('head_input', ['features', 'auto'])
def test_the_adapter_derives_the_head_of_a_plain_classifier(head_input):
    from distill.adapters import ClassifierAdapter
    model = teacher().eval()
    head = ClassifierAdapter(probe_input_size=SIZE, head_input=head_input).head(model)
    assert head.path == 'features' and head.linear is model.classifier
    images = torch.randn(2, 3, SIZE, SIZE)
    seen = {}
    model.features.register_forward_hook(lambda m, a, out: seen.update(feature=out))
    with torch.no_grad():
        logits = model(images)
        torch.testing.assert_close(head.forward(seen['feature']), logits)


@pytest.mark.parametrize('base', ['FitNet', 'KD'])
def test_derived_and_written_out_heads_train_alike(base):
    """The class's own head and the adapter's derived one: the same terms, the same gradients;
    DAM's class activation map reads the teacher's ``classifier`` (no ``fc`` in this model)."""
    written = _sokd(base, cls=MyNetWithHead).train()
    derived = _sokd(base, cls=MyNet, head_input='features').train()
    for distiller in (written, derived):
        assert distiller.dam_pass.cam_linear is distiller.teacher.classifier
    batch, _ = batches()
    results = []
    for distiller in (written, derived):
        torch.manual_seed(5)
        terms = distiller(batch)
        sum(terms.values()).backward()
        results.append((terms, [p.grad for p in distiller.student.parameters()]))
    (want, want_grads), (got, got_grads) = results
    assert want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], msg=key)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b)


class MaxPooled(MyNet):
    """Global max pooling: not the head the adapter derives."""

    def forward(self, x):
        return self.classifier(torch.flatten(torch.amax(self.features(x), dim=(2, 3)), 1))


class WrongHeadInput(MyNetWithHead):
    head_input = 'features.1'  # not the map forward_head takes


@pytest.mark.parametrize('cls,head_input,expected', [
    (MaxPooled, 'auto', "ClassifierAdapter(head_input='auto'), which took 'features' of "
                        "MaxPooled: global average pooling of that output and one of "
                        "MaxPooled's nn.Linear layers do not give its logits; give the class"),
    (MyNet, 'pool', "ClassifierAdapter(head_input='pool') on MyNet: that module returns a 1x1 "
                    'map at the probe size'),
    (MyNet, 'feature', "ClassifierAdapter(head_input='feature') on MyNet: MyNet has no module "
                       "at tap path 'feature'; closest existing paths: features"),
    (WrongHeadInput, None, "WrongHeadInput.head_input = 'features.1': "
                           "WrongHeadInput.forward_head(output of 'features.1', "
                           'Tensor[2, 8, 8, 8]) raises RuntimeError (mat1 and mat2 shapes '
                           'cannot be multiplied'),
])
def test_a_head_that_does_not_give_the_logits_is_refused_when_built(cls, head_input, expected):
    with pytest.raises(NoHeadError) as caught:
        _sokd('KD', cls=cls, head_input=head_input)
    assert '\n' not in str(caught.value) and expected in str(caught.value), str(caught.value)


# ------------------------------------------------------------------------- total_steps
def test_sokd_takes_total_steps_at_the_top_level_for_its_base():
    """ADM's warm-up (0.3 by default) counts the steps of the user's own loop: total_steps
    given to SoKD reaches the base, and training runs without set_progress."""
    distiller = _sokd('ADM', cls=MyNetWithHead, total_steps=4).train()
    assert distiller.base.total_steps == 4
    distiller(batches()[1])
    assert distiller.base.progress == 0.25


def test_total_steps_given_twice_must_agree():
    base = dict(type='KD', student=student(MyNetWithHead), teacher=teacher(MyNetWithHead),
                adapter=dict(type='ClassifierAdapter', probe_input_size=SIZE))
    same = build_distiller(dict(type='SoKD', base=dict(base, total_steps=3), total_steps=3))
    assert same.base.total_steps == 3
    with pytest.raises(ValueError, match='total_steps is given twice, 4 to SoKD and 3 in its '
                                         'base: give it once'):
        build_distiller(dict(type='SoKD', base=dict(base, total_steps=3), total_steps=4))
    built = build_distiller(base)
    with pytest.raises(TypeError, match='the base KD is built already: build it with '
                                        'total_steps=3'):
        build_distiller(dict(type='SoKD', base=built, total_steps=3))


# ------------------------------------------------------------------------- not classifiers
class ReturnsTuple(MyNet):
    def forward(self, x):
        return super().forward(x), self.features(x)


class ReturnsDict(MyNet):
    def forward(self, x):
        return dict(logits=super().forward(x))


class ReturnsMap(MyNet):
    def forward(self, x):
        return self.pool(self.features(x))


class AuxInTraining(MyNet):
    """Inception-style: (logits, aux logits) in training mode, logits in eval mode."""

    def forward(self, x):
        logits = super().forward(x)
        return (logits, logits) if self.training else logits


@pytest.mark.parametrize('cls,returned', [
    (ReturnsTuple, 'tuple of 2 (Tensor[2, 5], Tensor[2, 16, 4, 4])'),
    (ReturnsDict, 'dict(logits=Tensor[2, 5])'),
    (ReturnsMap, 'Tensor[2, 16, 1, 1]'),
])
@pytest.mark.parametrize('name', ['KD', 'FitNet', 'SoKD'])
def test_a_model_that_is_not_a_classifier_is_refused_in_one_line(cls, returned, name):
    adapter = dict(type='ClassifierAdapter', probe_input_size=SIZE)
    pair = dict(student=student(cls), teacher=teacher(cls), adapter=adapter)
    if name == 'FitNet':
        pair['taps'] = 'auto'
    cfg = dict(type='SoKD', base=dict(type='KD', **pair)) if name == 'SoKD' else dict(
        type=name, **pair)
    with pytest.raises(TypeError) as caught:
        build_distiller(cfg)
    message = str(caught.value)
    assert '\n' not in message
    assert message.startswith(f'{cls.__name__}(images) returned {returned}: ClassifierAdapter '
                              f'takes a classifier whose forward(images) returns the logits '
                              f'alone, Tensor[B, num_classes]'), message


def test_a_model_that_returns_more_in_training_stops_at_its_first_step():
    distiller = build_distiller(dict(type='KD', student=student(AuxInTraining),
                                     teacher=teacher(), adapter=dict(
                                         type='ClassifierAdapter', probe_input_size=SIZE)))
    with pytest.raises(TypeError, match=r'^AuxInTraining\(images\) returned tuple of 2 '):
        distiller.train()(batches()[0])


# ------------------------------------------------------------------------- a config file
MY_MODELS = '''
"""The user's own networks, registered so that a config names them."""
import torch
from torch import nn

from distill.registry import MODELS


@MODELS.register_module()
class MyNet(nn.Module):
    head_input = 'features'  # for SoKD: the module whose output is the last feature map

    def __init__(self, width=4, num_classes=2):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward_head(self, feature):
        return self.classifier(torch.flatten(self.pool(feature), 1))

    def forward(self, x):
        return self.forward_head(self.features(x))
'''

MY_CONFIG = '''
custom_imports = dict(imports=['my_models'], allow_failed_imports=False)
distiller = dict(
    type='SoKD',
    base=dict(type='ADM', student=dict(type='MyNet', width=4), teacher=dict(type='MyNet', width=8),
              adapter=dict(type='ClassifierAdapter', probe_input_size=16), taps='auto',
              online=True),
    dam=dict(channels=8))
data = dict(train=dict(type='ImageFolder', root='my_images/train', image_size=16),
            val=dict(type='ImageFolder', root='my_images/val', image_size=16),
            batch_size=4, val_batch_size=4, num_workers=0)
optimizer = dict(type='SGD', lr=0.01, momentum=0.9)
schedule = dict(epochs=1)
train = dict(log_interval=1)
'''


def write_my_images(root, per_class: dict, seed=0):
    """``root/<class>/<n>.png``: images of two sizes, as a user's folder holds them."""
    rng = np.random.default_rng(seed)
    for name, count in per_class.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            size = (20, 24) if index % 2 else (18, 18)
            pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f'{index}.png')


@pytest.mark.end_to_end
def test_a_config_naming_the_users_model_trains_on_the_users_images(tmp_path):
    from config_runs import run_entry_point
    from mm_helpers import REPO
    (tmp_path / 'my_models.py').write_text(MY_MODELS)
    config = tmp_path / 'my_config.py'
    config.write_text(MY_CONFIG)
    write_my_images(tmp_path / 'my_images' / 'train', dict(cat=4, dog=4))
    write_my_images(tmp_path / 'my_images' / 'val', dict(cat=2, dog=2), seed=1)
    output = run_entry_point('classification', config, tmp_path, '--work-dir',
                             str(tmp_path / 'work'),
                             env=dict(PYTHONPATH=f'{tmp_path}{os.pathsep}{REPO}'))
    records = json.loads((tmp_path / 'work' / 'metrics.json').read_text())
    assert [r['epoch'] for r in records] == [1], output[-3000:]
    assert records[0]['global_step'] == 2 and records[0]['val/num_samples'] == 4, records
    assert "taps='auto' paired student features" in output, output[-3000:]
    # SoKD's search and DAM ran on the user's networks
    assert {'student.dam', 'dam.anchor', 'arch.grad_norm'} <= set(records[0]), sorted(records[0])
    assert (tmp_path / 'work' / 'student.pth').is_file()
