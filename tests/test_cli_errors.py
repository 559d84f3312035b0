"""User errors end every entry point with one line and exit status 2; --debug (or
DISTILL_DEBUG=1) keeps the traceback; a bug keeps it always."""
import os
import sys

import pytest

from forked_run import run_python
from mm_helpers import REPO

from distill.engines.core.cli_errors import run_entry_point

pytestmark = pytest.mark.end_to_end  # collected first (conftest.py)


def run(script, *args, debug_env=False):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    env.pop('DISTILL_DEBUG', None)
    if debug_env:
        env['DISTILL_DEBUG'] = '1'
    return run_python([str(REPO / script), *args], env, REPO, timeout=300)


@pytest.mark.parametrize('script,config,option,message', [
    ('tasks/classification/train.py', 'configs/classification/demo.py', 'distiller.tauu=1',
     'unknown config key distiller.tauu; did you mean distiller.tau'),
    ('tasks/segmentation/train.py', 'configs/segmentation/shapes/adm_online.py',
     'model.distiller.tauu=1', 'unknown config key model.distiller.tauu; did you mean'),
])
def test_a_config_typo_ends_with_one_line(tmp_path, script, config, option, message):
    pytest.importorskip('mmseg')
    done = run(script, config, '--work-dir', str(tmp_path / 'w'), '--cfg-options', option)
    assert done.returncode == 2, done.stderr[-2000:]
    assert 'Traceback' not in done.stderr and message in done.stderr
    assert done.stderr.count('error: ') == 1 and 'rerun with --debug' in done.stderr
    if 'classification' in script:  # the same helper in every entry point: checked once
        for debug in (dict(debug_env=True), dict()):
            args = [config, '--work-dir', str(tmp_path / 'w'), '--cfg-options', option]
            done = run(script, *args, **debug) if debug else run(script, '--debug', *args)
            assert 'Traceback' in done.stderr and message in done.stderr


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', ['train.py'])
    monkeypatch.delenv('DISTILL_DEBUG', raising=False)

    def typo():
        raise KeyError('unknown config key x.y')

    def bug():
        raise ZeroDivisionError('a bug')

    with pytest.raises(SystemExit) as info:
        run_entry_point(typo)
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith('error: unknown config key x.y\n')
    with pytest.raises(ZeroDivisionError):
        run_entry_point(bug)
