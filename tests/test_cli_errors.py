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


ENTRY_POINTS = ['tasks/classification/train.py', 'tasks/classification/test.py',
                'tasks/classification/demo.py', 'tasks/segmentation/train.py',
                'tasks/segmentation/test.py', 'tasks/segmentation/export.py',
                'tasks/detection/train.py', 'tasks/detection/test.py',
                'tasks/detection/export.py', 'tasks/diffusion/train.py']


def test_every_entry_point_lists_debug_in_its_help():
    pytest.importorskip('mmdet')
    assert sorted(ENTRY_POINTS) == sorted(str(p.relative_to(REPO)) for p in
                                          REPO.glob('tasks/*/*.py') if p.name != 'compare.py')
    for script in ENTRY_POINTS:
        done = run(script, '--help')
        assert done.returncode == 0 and '--debug' in done.stdout, (script, done.stdout[-2000:])


# root writes through any permission (CAP_DAC_OVERRIDE): the run drops that capability, as a
# user has none of it, then runs the script (sys.argv[1:])
WITHOUT_ROOT_OVERRIDE = """
import ctypes, runpy, sys
libc = ctypes.CDLL(None, use_errno=True)
class Header(ctypes.Structure):
    _fields_ = [('version', ctypes.c_uint32), ('pid', ctypes.c_int)]
class Data(ctypes.Structure):
    _fields_ = [('effective', ctypes.c_uint32), ('permitted', ctypes.c_uint32),
                ('inheritable', ctypes.c_uint32)]
header, data = Header(0x20080522, 0), (Data * 2)()
if libc.capget(ctypes.byref(header), data) == 0:
    data[0].effective &= ~0b110  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    assert libc.capset(ctypes.byref(header), data) == 0
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


@pytest.mark.parametrize('script,config,flag,options', [
    ('tasks/classification/train.py', 'configs/classification/demo.py', '--work-dir', []),
    ('tasks/segmentation/train.py', 'configs/segmentation/shapes/adm_online.py', '--work-dir',
     ['--cfg-options', 'prepare_data=None']),  # its shapes set is not written
    ('tasks/diffusion/train.py', 'configs/diffusion/adm_shapes_tiny.py', '--output_dir', []),
])
def test_an_unwritable_work_dir_ends_with_one_line(tmp_path, script, config, flag, options):
    """A work dir in a read-only folder, and one that is read-only itself: a PermissionError
    traceback from the first write (the run's lock); now one line naming the work dir."""
    pytest.importorskip('mmseg')
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    env.pop('DISTILL_DEBUG', None)
    read_only = tmp_path / 'read_only'
    (read_only / 'work').mkdir(parents=True)
    for work in (read_only / 'new', read_only / 'work'):
        os.chmod(read_only / 'work', 0o555)
        os.chmod(read_only, 0o555)
        try:
            done = run_python(['-c', WITHOUT_ROOT_OVERRIDE, str(REPO / script), config, flag,
                               str(work), *options], env, REPO, timeout=300)
        finally:
            os.chmod(read_only, 0o755)
            os.chmod(read_only / 'work', 0o755)
        assert done.returncode == 2 and 'Traceback' not in done.stderr, done.stderr[-3000:]
        errors = [line for line in done.stderr.splitlines() if line.startswith('error: ')]
        assert errors == [f'error: work dir {work} is not writable: Permission denied; nothing '
                          f'was written there. Give a work dir this user can write to, or fix '
                          f'its permissions'], done.stderr[-3000:]
    assert sorted(p.name for p in read_only.iterdir()) == ['work']
