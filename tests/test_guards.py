"""The finite-state guard shared by the engines (classification, diffusion)."""
import pytest
import torch
from torch import nn

from distill.engines.core.guards import NonFiniteLossError, check_finite_state, first_non_finite


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


# ----------------------------------------------------------- no device read in a training step
_READS = ('item', 'tolist', '__bool__', '__float__', '__int__', '__index__', '__format__',
          'cpu', 'numpy')


def test_a_training_step_reads_the_device_only_at_logging_steps(tmp_path, monkeypatch):
    """Every host read of a tensor (``.item()``, ``.tolist()``, ``bool``, ``float``, ``.cpu()``,
    ...) during a classification run, attributed to the step whose forward came last: only the
    logging steps (every 4th) and the last one (the epoch's evaluation and checkpoint) read."""
    from distill.engines.classification.train import train_classification
    from distill.engines.core.guards import DeferredChecks
    from test_classification_engine import tiny_cfg

    step, reads = [0], {}
    add_terms = DeferredChecks.add_terms

    def counting_add_terms(self, terms, at_step, epoch):
        step[0] = at_step
        return add_terms(self, terms, at_step, epoch)

    monkeypatch.setattr(DeferredChecks, 'add_terms', counting_add_terms)
    for name in _READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            if step[0]:
                reads.setdefault(step[0], []).append(_name)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    cfg = tiny_cfg(epochs=1, num_train=192)  # 12 steps of ADM, every term on
    cfg.train.log_interval = 4
    result = train_classification(cfg, work_dir=tmp_path)
    assert result.records[-1]['global_step'] == 12
    assert set(reads) <= {4, 8, 12}, {s: r for s, r in reads.items() if s % 4}
    assert reads[4] == reads[8] == ['tolist']  # one copy per logging step


def test_deferred_checks_name_the_first_bad_step_and_term():
    """A NaN term and, later, a bad state flag wait on the device; the read names the first."""
    from distill.engines.core.guards import DeferredChecks
    model = nn.Linear(2, 2)
    checks = DeferredChecks()
    checks.add_terms({'student.task': torch.tensor(1.0), 'student.kd': torch.tensor(2.0)}, 1, 1)
    checks.add_state(model, 1, 1)
    checks.add_terms({'student.task': torch.tensor(1.5), 'student.kd': torch.tensor(float('nan'))},
                     2, 1)
    with torch.no_grad():
        model.bias[0] = float('inf')
    checks.add_state(model, 2, 1)
    assert len(checks) == 4
    with pytest.raises(NonFiniteLossError, match=r'loss term student.kd became non-finite \(nan\) '
                                                 r'at step 2 \(epoch 1\); finite: student.task=1.5'
                                                 r'\. The step before, largest first: '
                                                 r'student.kd=2, student.task=1'):
        checks.read(model)
    assert len(checks) == 0
    checks.add_terms({'student.task': torch.tensor(1.0)}, 3, 1)
    checks.add_state(model, 3, 1)
    with pytest.raises(NonFiniteLossError, match=r'bias became non-finite after the optimiser '
                                                 r'step at step 3 \(epoch 1\)'):
        checks.read(model)
    with torch.no_grad():
        model.bias[0] = 0.0
    checks.add_terms({'a': torch.tensor(1.0)}, 4, 1)
    checks.add_values({'arch.val_loss': 0.5}, 4, 1)
    assert checks.read(model) == [('terms', 4, {'a': 1.0}), ('values', 4, {'arch.val_loss': 0.5})]


def test_an_infinite_term_stops_the_run_as_a_nan_does():
    """inf and -inf terms are non-finite too (a loss of 1e39 in float32 is inf, not NaN): the
    read names the first and lists the others; the immediate check does the same."""
    from distill.engines.core.guards import DeferredChecks, check_finite_terms
    checks = DeferredChecks()
    checks.add_terms({'a': torch.tensor(1.0), 'b': torch.tensor(float('inf')),
                      'c': torch.tensor(float('-inf'))}, 5, 2)
    with pytest.raises(NonFiniteLossError, match=r'loss term b became non-finite \(inf\) at '
                                                 r'step 5 \(epoch 2\); also non-finite: c=-inf; '
                                                 r'finite: a=1'):
        checks.read()
    with pytest.raises(NonFiniteLossError, match=r'loss term c became non-finite \(-inf\)'):
        check_finite_terms({'a': torch.tensor(1.0), 'c': torch.tensor(float('-inf'))}, 1)
    assert check_finite_terms({'a': torch.tensor(3e38)}, 1) == {'a': pytest.approx(3e38)}
