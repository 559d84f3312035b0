"""Run a Python script the way ``subprocess.run([sys.executable, script, *args])`` does, in a
process forked from a server that has already imported torch and the task frameworks.

Most of an entry-point test's time went to its subprocesses importing torch, mmengine, mmseg and
mmdet (about 8 s per launch on 2 cores, a dozen launches in some tests). multiprocessing's
``forkserver`` imports them once per test process (``PRELOAD``) and forks a child per run: a
new process as before (its own pid, exit status, fds 1 and 2 in a file, ``os.environ`` and cwd
given per run, ``atexit`` run at the end), without the imports. ``distill`` is deliberately not
preloaded: every run imports it from the tree under test, and the tests that check what a run
imports (an exported student's plain ``tools/test.py``) still see only what the run imported.
Runs that start processes of their own (torchrun, ``accelerate launch``) and runs that are
killed on purpose stay subprocesses.
"""
from __future__ import annotations

import atexit
import importlib.util
import multiprocessing
import os
import runpy
import sys
import tempfile
from dataclasses import dataclass

PRELOAD = ['torch', 'numpy', 'mmengine.runner', 'mmseg.models', 'mmdet.models', 'accelerate',
           'diffusers']
_CONTEXT = None


def _context():
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context('forkserver')
        _CONTEXT.set_forkserver_preload(
            [m for m in PRELOAD if importlib.util.find_spec(m.split('.')[0]) is not None])
    return _CONTEXT


@dataclass
class Completed:
    """The parts of ``subprocess.CompletedProcess`` the tests read."""
    args: list
    returncode: int
    stdout: str
    stderr: str


def _child(argv: list, env: dict, cwd: str, stdout: str, stderr: str) -> None:
    for target, path in ((1, stdout), (2, stderr)):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    # PYTHONPATH's folders on sys.path, as a new interpreter puts them (a config's
    # custom_imports of the user's own module reads them)
    for folder in reversed([p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    if 'OMP_NUM_THREADS' in env:  # torch, already imported, read it before this run's env
        import torch
        torch.set_num_threads(int(env['OMP_NUM_THREADS']))
    try:
        if argv[0] == '-c':  # python -c CODE args: sys.argv is ['-c', args...]
            sys.argv = ['-c', *argv[2:]]
            exec(compile(argv[1], '<string>', 'exec'), {'__name__': '__main__'})
        else:
            sys.argv = list(argv)
            sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
            runpy.run_path(argv[0], run_name='__main__')
    finally:
        atexit._run_exitfuncs()  # as at interpreter exit (multiprocessing's child skips it)


def run_python(argv: list, env: dict, cwd, timeout: float) -> Completed:
    """``python *argv`` (a script path and its arguments, or ``-c CODE args``)."""
    with tempfile.NamedTemporaryFile('w+') as out, tempfile.NamedTemporaryFile('w+') as err:
        process = _context().Process(target=_child,
                                     args=(argv, env, str(cwd), out.name, err.name))
        process.start()
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
            raise TimeoutError(f'python {" ".join(argv[:3])} ... ran over {timeout} s')
        return Completed(['python', *argv], process.exitcode, out.read(), err.read())
