"""Plan and run a comparison: every (method, seed) through its engine's entry point, in its own
process, ``jobs`` at a time; finished runs reused, unfinished ones resumed.

Layout of ``out``::

    results.json                the plan, every finished run's metric, the tables
    results.png                 a dot per seed per method
    configs/<method>.py         the config of each method (the user's as _base_)
    <method>/seed<k>/           the run's work dir (the engine's files), with
        compare.log             its output (every attempt, appended)
        compare_run.json        what compare knows of it: settings fingerprint, state, metric
    teachers/                   teachers taken out of mmengine checkpoints (offline methods)

A run is reused when its ``compare_run.json`` says it finished with the same settings (the
merged config, options, seed and teacher), or when its engine's metrics show it complete; a run
that started with the same settings and left a checkpoint is resumed with the engine's resume
option; anything else is started afresh (the engine's overwrite option). A run whose settings
changed (another ``--set``, an edited config) is rerun.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from distill.compare.frameworks import FRAMEWORKS, Framework, detect
from distill.compare.methods import (DEFAULT_METHODS, METHODS, baseline_of, method_section,
                                     resolve_method, variant)
from distill.compare.options import parse_options, split_sets
from distill.compare.report import format_report, plot
from distill.compare.runs import LOG, Run, _fingerprint, _spawn, _tail, slug



class CompareError(RuntimeError):
    """Some runs failed (the others' results are saved and printed)."""


class Comparison:
    """One comparison: its plan (``runs``), its results dict, its execution."""

    def __init__(self, config, methods=None, seeds=(0, 1, 2), out=None, jobs: int = 1,
                 sets=(), teacher_ckpt: str | None = None, teacher_seed: int | None = None,
                 task: str | None = None, rerun: bool = False, echo=print):
        self.echo = echo
        self.config = Path(config).resolve()
        if not self.config.is_file():
            raise FileNotFoundError(f'config {config} not found')
        from mmengine.config import Config
        user_cfg = Config.fromfile(str(self.config), import_custom_modules=False)
        if task is not None and task not in FRAMEWORKS:
            raise ValueError(f'--task {task!r}: one of {", ".join(FRAMEWORKS)}')
        self.fw: type[Framework] = FRAMEWORKS[task] if task else detect(user_cfg)
        chosen, self.specs = [], {}
        for name in methods or DEFAULT_METHODS[self.fw.name]:
            if '=' in name:  # the user's variant NAME=METHOD
                spec = variant(name, self.fw.name)
                name = spec.name
                self.specs[name] = spec
            else:
                name = resolve_method(name, self.fw.name)
                self.specs[name] = METHODS[name]
            if name not in chosen:
                chosen.append(name)
        self.seeds = list(dict.fromkeys(int(s) for s in seeds))
        if not self.seeds:
            raise ValueError('no seeds')
        if jobs < 1:
            raise ValueError(f'--jobs {jobs}: at least 1')
        self.jobs, self.rerun = jobs, rerun
        if teacher_ckpt is not None and teacher_seed is not None:
            raise ValueError('give --teacher-ckpt or --teacher-seed, not both')
        offline = [m for m in chosen if self.specs[m].offline]
        self.teacher_seed = self.seeds[0] if teacher_seed is None else int(teacher_seed)
        if teacher_ckpt is None and offline:
            if self.teacher_seed not in self.seeds:
                raise ValueError(f'--teacher-seed {self.teacher_seed} is not one of --seeds '
                                 f'{" ".join(map(str, self.seeds))}')
            if 'independent' not in chosen:
                self.echo(f"[compare] adding 'independent': its teacher (seed "
                          f"{self.teacher_seed}) is the frozen teacher of "
                          f"{', '.join(offline)}")
                chosen.insert(0, 'independent')
                self.specs['independent'] = METHODS['independent']
        if 'independent' in chosen:  # first: the others pair to it, the offline ones wait
            chosen.remove('independent')
            chosen.insert(0, 'independent')
        self.methods = chosen
        if teacher_ckpt is not None:
            path = Path(teacher_ckpt)
            if not path.exists():
                raise FileNotFoundError(f'--teacher-ckpt {teacher_ckpt} not found')
            teacher_ckpt = str(path.resolve())
        self.teacher_ckpt = teacher_ckpt
        self.out = Path(out or Path('work_dirs') / 'compare' / self.config.stem).resolve()
        self.common_sets, self.own_sets = split_sets(sets, self.methods)
        for name, spec in self.specs.items():
            if spec.base_method is not None and not self.own_sets[name]:
                self.echo(f"[compare] variant {name!r} has no --set '{name}:KEY=VALUE': it "
                          f'trains what {spec.base_method} trains')
        self.user_section = self.fw.user_section(user_cfg)
        try:  # as the user named it, where it is under the working directory
            shown = str(self.config.relative_to(Path.cwd().resolve()))
        except ValueError:
            shown = str(self.config)
        self.results = dict(
            config=str(self.config), config_shown=shown, framework=self.fw.name,
            out=str(self.out),
            methods=self.methods, seeds=self.seeds,
            sets=self.common_sets + [f'{m}:{s}' for m in self.methods for s in self.own_sets[m]],
            teacher=(dict(checkpoint=self.teacher_ckpt) if self.teacher_ckpt
                     else dict(seed=self.teacher_seed)),
            metric=dict(title=self.fw.metric_title, unit=self.fw.unit,
                        higher_is_better=self.fw.higher_is_better, digits=self.fw.digits,
                        student_key=self.fw.student_key, teacher_key=self.fw.teacher_key),
            baselines={m: baseline_of(m, self.methods, self.specs) for m in self.methods},
            offline=offline, runs={}, failed=[])
        self.runs: list[Run] = []

    # ------------------------------------------------------------------ the plan
    def plan(self) -> list[Run]:
        """Write every method's config; a ``Run`` per (method, seed), each found finished,
        to resume, or to start."""
        fw, out = self.fw, self.out
        (out / 'configs').mkdir(parents=True, exist_ok=True)
        teacher_dir = out / 'independent' / f'seed{self.teacher_seed}'
        teacher_target = self.teacher_ckpt or self.teacher_path(teacher_dir)
        teacher_fingerprint = None
        prepared = False
        for method in self.methods:
            spec = self.specs[method]
            options = self.common_sets + self.own_sets[method]
            parsed = parse_options(options)
            base_cfg = fw.load(self.config, parsed)
            if not prepared:
                fw.prepare(base_cfg)  # once, before any run (they would race to write it)
                prepared = True
            section = method_section(method, self.user_section, fw.name, self.specs)
            teacher = teacher_target if spec.offline else None
            config = out / 'configs' / f'{slug(method)}.py'
            text = fw.derived_config(self.config, method, spec.doc, section,
                                     teacher if fw.name != 'diffusion' else None, base_cfg)
            if not config.is_file() or config.read_text() != text:
                config.write_text(text)
            cfg = fw.load(config, parsed)
            for seed in self.seeds:
                work_dir = out / slug(method) / f'seed{seed}'
                run = Run(method, seed, work_dir, config, options, cfg, teacher=teacher,
                          log=work_dir / LOG)
                run.fingerprint = _fingerprint(
                    fw.name, cfg.to_dict(), options, seed, teacher,
                    teacher_fingerprint if spec.offline and not self.teacher_ckpt else None)
                if method == 'independent' and seed == self.teacher_seed:
                    teacher_fingerprint = run.fingerprint
                run.needs_teacher = spec.offline and not self.teacher_ckpt
                self.runs.append(run)
        return self.runs

    def teacher_path(self, work_dir: Path) -> str:
        if self.fw.name in ('segmentation', 'detection'):
            return str(self.out / 'teachers' / f'independent_seed{self.teacher_seed}.pth')
        return str(work_dir / ('teacher' if self.fw.name == 'diffusion' else 'teacher.pth'))

    def _state(self, run: Run) -> str:
        """'done' (record read), 'resume' or 'start'."""
        marker = run.read_marker()
        if self.rerun or marker.get('fingerprint') != run.fingerprint:
            if marker and marker.get('fingerprint') != run.fingerprint and not self.rerun:
                self.echo(f'[compare] {run.method} seed {run.seed}: settings changed since its '
                          f'last run: started afresh')
            return 'start'
        record = self.fw.final_record(run.work_dir, run.cfg)
        if record is not None:
            run.record = record
            return 'done'
        return 'resume' if self.fw.has_checkpoint(run.work_dir) else 'start'

    # ------------------------------------------------------------------ running
    def run(self) -> dict:
        if not self.runs:
            self.plan()
        total = len(self.runs)
        states = [(run, self._state(run)) for run in self.runs]
        pending = [run for run, state in states if state != 'done']
        for run, state in states:
            run.resume = state == 'resume'
        resumed = sum(r.resume for r in pending)
        self.echo(f'[compare] {self.fw.name}: {_count(len(self.methods), "method")} x '
                  f'{_count(len(self.seeds), "seed")} = {_count(total, "run")}: '
                  f'{total - len(pending)} '
                  f'finished before, {resumed} to resume, {len(pending) - resumed} to '
                  f'train; {self.jobs} at a time; each run logs to '
                  f'{self.out}/<method>/seed<k>/{LOG}')
        for run, state in states:
            if state == 'done':
                run.reused = True
                self._finished(run, seconds=run.read_marker().get('seconds'))
        self._save()
        self._execute(pending)
        self._save()
        text = format_report(self.results)
        self.echo('\n' + text)
        (self.out / 'results.txt').write_text(text + '\n')
        try:
            png = plot(self.results, self.out / 'results.png')
            self.echo(f'\nwrote {self.out / "results.json"}, {png} and results.txt')
        except ImportError as err:  # matplotlib is the cls extra's
            self.echo(f'\nwrote {self.out / "results.json"} (no plot: {err})')
        if self.results['failed']:
            raise CompareError(f"{len(self.results['failed'])} run(s) failed: " + '; '.join(
                f"{f['method']} seed {f['seed']} ({f['log']})" for f in self.results['failed']))
        return self.results

    def _execute(self, pending: list[Run]) -> None:
        env = dict(os.environ)
        env.setdefault('OMP_NUM_THREADS', str(max(1, (os.cpu_count() or 1) // self.jobs)))
        running: list[Run] = []
        teacher_run = next((r for r in self.runs if r.method == 'independent'
                            and r.seed == self.teacher_seed), None)
        broken: set[str] = set()   # methods with a failed run: their other runs are skipped
        previous = None
        if threading_main():
            previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            while pending or running:
                while len(running) < self.jobs:
                    run = self._next(pending, teacher_run, broken)
                    if run is None:
                        break
                    pending.remove(run)
                    self._start(run, env)
                    running.append(run)
                if not running:  # what is left waits for a teacher that failed
                    for run in pending:
                        self._failed(run, 'its teacher run failed', skipped=True)
                    pending.clear()
                    break
                time.sleep(0.2)
                for run in [r for r in running if r.process.poll() is not None]:
                    running.remove(run)
                    self._collect(run, broken)
        except KeyboardInterrupt:
            for run in running:
                run.process.terminate()
            for run in running:
                try:
                    run.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    run.process.kill()
            self._save()
            self.echo(f'[compare] interrupted: {len(self.results_done())} of {len(self.runs)} '
                      f'runs finished; the same command continues where this one stopped')
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def results_done(self) -> list:
        return [(m, s) for m, runs in self.results['runs'].items() for s in runs]

    def _next(self, pending, teacher_run, broken) -> Run | None:
        for run in pending:
            if run.method in broken:
                continue
            if run.needs_teacher and (teacher_run is None or teacher_run.record is None):
                continue
            return run
        for run in [r for r in pending if r.method in broken]:
            pending.remove(run)
            self._failed(run, f'an earlier {run.method} run failed', skipped=True)
        return None

    def _start(self, run: Run, env) -> None:
        command = self.fw.command(run.config, run.work_dir, run.seed, run.options, run.resume,
                                  run.teacher if self.fw.name == 'diffusion' else None)
        run.work_dir.mkdir(parents=True, exist_ok=True)
        log = open(run.log, 'a')
        log.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} "
                  f"{'resume' if run.resume else 'start'}: {' '.join(command)}\n")
        log.flush()
        run.started = time.time()
        run.process = _spawn(command, log, env, os.getcwd())
        log.close()  # the child holds its own descriptor
        run.write_marker(state='started', command=command, pid=run.process.pid)

    def _collect(self, run: Run, broken: set) -> None:
        seconds = time.time() - run.started
        code = run.process.returncode
        record = self.fw.final_record(run.work_dir, run.cfg) if code == 0 else None
        if record is None:
            broken.add(run.method)
            reason = f'exit {code}' if code else 'exit 0 but no final metric'
            self._failed(run, reason)
            return
        run.record = record
        run.write_marker(state='done', seconds=round(seconds, 1), record=record)
        self._finished(run, seconds)
        self._save()

    def _finished(self, run: Run, seconds) -> None:
        if run.method == 'independent' and run.seed == self.teacher_seed and \
                not self.teacher_ckpt and any(r.needs_teacher for r in self.runs):
            self.fw.export_teacher(run.work_dir, run.cfg, Path(self.teacher_path(run.work_dir)))
        entry = dict(run.record, work_dir=str(run.work_dir))
        if seconds is not None:
            entry['seconds'] = round(seconds, 1)
        self.results['runs'].setdefault(run.method, {})[str(run.seed)] = entry
        done, total = len(self.results_done()), len(self.runs)
        digits, title = self.fw.digits, self.fw.metric_title
        teacher = run.record.get('teacher')
        width = 20
        filled = round(width * done / total)
        what = 'reused' if run.reused else ('resumed' if run.resume else 'trained')
        self.echo(f"[compare] [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                  f"{run.method} seed {run.seed}: student {title} "
                  f"{run.record['student']:.{digits}f}"
                  + ('' if teacher is None else f', teacher {teacher:.{digits}f}')
                  + f' ({what}' + ('' if seconds is None else f' in {seconds:.0f} s') + ')')

    def _failed(self, run: Run, reason: str, skipped: bool = False) -> None:
        self.results['failed'].append(dict(method=run.method, seed=run.seed, reason=reason,
                                           log=str(run.log)))
        if skipped:
            self.echo(f'[compare] {run.method} seed {run.seed}: not run ({reason})')
            return
        run.write_marker(state='failed', reason=reason)
        self.echo(f'[compare] {run.method} seed {run.seed} FAILED ({reason}); the end of '
                  f'{run.log}:\n{_tail(run.log)}')
        self._save()

    def _save(self) -> None:
        from distill.compare.report import tables
        self.results['tables'] = tables(self.results)
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / 'results.json'
        partial = path.with_suffix('.partial')
        partial.write_text(json.dumps(_finite(self.results), indent=1))
        partial.replace(path)


def _finite(value):
    """NaN (no interval of one seed) as null: results.json stays strict JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _count(n: int, noun: str) -> str:
    return f'{n} {noun}' + ('' if n == 1 else 's')


def threading_main() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f'signal {signum}')


def compare(config, methods=None, seeds=(0, 1, 2), out=None, jobs: int = 1, sets=(),
            teacher_ckpt: str | None = None, teacher_seed: int | None = None,
            task: str | None = None, rerun: bool = False, echo=print) -> dict:
    """Train every method of ``methods`` on ``config`` for every seed of ``seeds`` and return
    the results dict (also in ``out/results.json``): its ``runs`` (per method and seed the
    student's and teacher's metric) and ``tables`` (``distill.compare.report.tables``).

    ``sets``: ``['KEY=VALUE', 'METHOD:KEY=VALUE', ...]`` (the entry points' ``--cfg-options``
    syntax), or a dict ``{KEY: value}`` for every method. Raises ``CompareError`` after
    printing and saving the others when a run fails."""
    return Comparison(config, methods, seeds, out, jobs, sets, teacher_ckpt, teacher_seed,
                      task, rerun, echo).run()


def load_results(out) -> dict:
    path = Path(out) / 'results.json'
    if not path.is_file():
        raise FileNotFoundError(f'{path} not found: no comparison was saved in {out}')
    return json.loads(path.read_text())


def report(out, echo=print) -> dict:
    """Reprint the tables of the comparison saved in ``out`` (trains nothing)."""
    results = load_results(out)
    echo(format_report(results))
    return results
