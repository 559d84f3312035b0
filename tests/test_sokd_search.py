"""A search that moves: on a task where the choice of augmentation matters, SoKD's bi-level
search shifts the policy measurably within a few arch steps (README, "SoKD").

The task: the inputs carry their class as a one-hot channel map (plus noise); the frozen
teacher's tapped feature is that map, and both heads read class c from channel c. Matching
the teacher's feature therefore teaches the student its classes; matching a channel-shuffled
copy (magnitude 0.8) teaches it the wrong ones. A search whose hypergradient is right must
move weight from ``channel_shuffle`` to ``identity`` and lower the shuffle's magnitude.
"""
import pytest
import torch
from torch import nn

from distill import build_distiller

CLASSES = 4


class ChannelNet(nn.Module):
    """``feat`` (1x1 conv, the tapped feature) -> mean pool -> ``fc``."""

    def __init__(self, teacher: bool):
        super().__init__()
        self.feat = nn.Conv2d(CLASSES, CLASSES, 1)
        self.fc = nn.Linear(CLASSES, CLASSES)
        with torch.no_grad():
            self.fc.weight.copy_(3 * torch.eye(CLASSES))
            self.fc.bias.zero_()
            if teacher:
                self.feat.weight.copy_(torch.eye(CLASSES).reshape(CLASSES, CLASSES, 1, 1))
                self.feat.bias.zero_()
            else:
                self.feat.weight.mul_(0.1)

    def forward(self, x):
        return self.fc(self.feat(x).mean(dim=(2, 3)))


def make_batch(generator, size=32):
    labels = torch.randint(0, CLASSES, (size,), generator=generator)
    inputs = torch.nn.functional.one_hot(labels, CLASSES).float()[:, :, None, None]
    inputs = inputs.expand(size, CLASSES, 4, 4) + 0.5 * torch.randn(
        size, CLASSES, 4, 4, generator=generator)
    return dict(inputs=inputs, labels=labels)


def search(hypergrad, arch_steps=20, lr=0.05, weight_decay=0.0):
    torch.manual_seed(0)
    distiller = build_distiller(dict(
        type='SoKD', hypergrad=hypergrad, xi=0.1, arch_interval=1, dam=None,
        dafa=dict(ops=['identity', 'channel_shuffle'], init_magnitude=0.8),
        base=dict(type='FitNet', student=ChannelNet(False), teacher=ChannelNet(True),
                  adapter=dict(type='ClassifierAdapter', probe_input_size=4, in_channels=CLASSES),
                  taps=[dict(student='feat', teacher='feat')], connector='auto')))
    distiller.train()
    arch = distiller.arch_parameters()
    main = [p for p in distiller.parameters() if p.requires_grad and all(p is not a for a in arch)]
    optimizer = torch.optim.SGD(main, lr=0.1)
    arch_optimizer = torch.optim.Adam(arch, lr=lr, betas=(0.5, 0.999), weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(1)
    for step in range(arch_steps):
        train, val = make_batch(generator), make_batch(generator)
        assert distiller.wants_arch_step(1, step)
        arch_optimizer.zero_grad(set_to_none=True)
        distiller.arch_backward(train, val)
        arch_optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sum(distiller(train).values()).backward()
        optimizer.step()
    return distiller


@pytest.mark.parametrize('hypergrad', ['factored', 'exact', 'finite_difference'])
def test_search_moves_the_policy_where_the_choice_matters(hypergrad):
    distiller = search(hypergrad)
    alpha = distiller.dafa.alpha.detach()
    policy = distiller.policy()
    # 20 Adam steps of lr 0.05: the two logits (0 at the start) part by more than 0.8 (1.03
    # measured, the same with all three methods), so the identity's weight goes from 0.5 to
    # above 0.68; the harmful shuffle's magnitude drops from 0.8 (0.71 measured)
    assert float(alpha[0] - alpha[1]) > 0.8, alpha
    assert policy['weights']['identity'] > 0.68
    assert policy['magnitudes']['channel_shuffle'] < 0.75
    assert policy['top'][0][0] == 'identity'
    assert policy['entropy'] < 0.63  # log(2) = 0.69 at the start


def test_a_weight_decayed_small_step_search_stays_put():
    """The former default (Adam lr 3e-3, L2 weight decay 1e-3) on the same task: alpha moves
    by at most 20 * 3e-3 per logit, which is why "searched" and "not searched" matched."""
    alpha = search('factored', lr=3e-3, weight_decay=1e-3).dafa.alpha.detach()
    assert float((alpha[0] - alpha[1]).abs()) < 2 * 20 * 3e-3
