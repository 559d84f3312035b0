"""The finite-state guard shared by the engines (classification, diffusion)."""
import pytest
import torch
from torch import nn

from distill.engines.guards import NonFiniteLossError, check_finite_state, first_non_finite


def test_first_non_finite_tensor_is_named_with_its_step_and_terms():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    check_finite_state(model, 3)  # all finite: nothing
    model[1].running_var[1] = float('inf')
    model[0].bias.data[0] = float('nan')
    with pytest.raises(NonFiniteLossError, match=r'^0\.bias became non-finite after the '
                                                 r'optimiser step at step 7 \(epoch 2\); the '
                                                 r'loss terms of that step, largest first: '
                                                 r'b=-1e\+20, a=1'):
        check_finite_state(model, 7, 2, values={'a': 1.0, 'b': -1e20})
    model[0].bias.data[0] = 0.0
    assert first_non_finite(model.named_buffers()) == '1.running_var'


def test_optimiser_moments_and_other_processes_count():
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    optimizer.state[model.weight]['momentum_buffer'][0, 0] = float('inf')
    check_finite_state(model, 1)  # the weights alone are fine
    with pytest.raises(NonFiniteLossError, match=r'momentum_buffer of weight'):
        check_finite_state(model, 1, optimizer=optimizer, when='before writing')
    # another process found one: every process raises, so none waits in a collective
    with pytest.raises(NonFiniteLossError, match=r'on another process'):
        check_finite_state(nn.Linear(2, 2), 1, reduce=lambda flag: flag + 1)
    check_finite_state(nn.Linear(2, 2), 1, reduce=lambda flag: flag)
