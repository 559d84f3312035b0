"""Hand mutants of distill/ and the tests that must kill them: a check of the test suite's
strength, to rerun after changing the code or its tests. Not a test (CI does not run it).

    .venv/bin/python scripts/mutants.py              # every mutant, on the working tree's files
    .venv/bin/python scripts/mutants.py ema tau      # the mutants whose name holds a word
    .venv/bin/python scripts/mutants.py --head       # on the last commit's files instead
    .venv/bin/python scripts/mutants.py --list       # the mutants and their tests

A mutant is a realistic bug written as ``(name, file, original snippet, replacement, tests)``:
a flipped sign, an off-by-one, a dropped detach, swapped arguments, a changed default. The
repository's files (those git knows of and does not ignore, as in the working tree, or with
``--head`` the last commit's) are copied once into a temporary folder, never touching the
checkout others run from. The named tests must pass there unmutated (the baseline); then each
mutant is applied alone to the copy, its tests run (``pytest -n 0 -x``, with ``PYTHONPATH`` at
the copy so the entry-point tests' subprocesses import the mutated code too, and no bytecode
written, so no stale ``.pyc`` hides a mutant of the same size), and the file put back.

Killed: a named test failed (or the run passed ``--timeout``). Survived: they all passed, so
the bug would reach a user. Stale: the snippet is not in its file exactly once (the code moved:
update the mutant). The score is killed / (killed + survived).

Mutants live in ``MUTANTS`` below; each one names the tests that kill it (checked when added).
Keep them fast: unit tests where one exists, an entry-point test only where nothing else can.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str            # relative to the repository root
    original: str        # must occur exactly once in the file
    replacement: str
    tests: tuple         # pytest node ids, one of which must fail
    what: str = ''


def mutant(name, path, original, replacement, *tests, what=''):
    return Mutant(name, path, original, replacement, tuple(tests), what)


DIFFUSION_TRAIN = 'distill/engines/diffusion/train.py'
ADM_LOSSES = 'distill/losses/adm.py'
LOGITS = 'distill/losses/logits.py'
SOKD = 'distill/distillers/sokd.py'
DAM_PASS = 'distill/sokd/dam_pass.py'
BASE = 'distill/distillers/base.py'
TRAINER = 'distill/engines/core/trainer.py'
CONFIG_CHECKS = 'distill/config_checks.py'

MUTANTS = [
    # ------------------------------------------------------------------ diffusion
    mutant('diffusion-ema-never-steps', DIFFUSION_TRAIN,
           'self.ema.step(self.student.parameters())', 'pass',
           'tests/test_diffusion_flags.py::test_ema_follows_the_warmup_decay_recurrence',
           what='the EMA is never stepped'),
    mutant('diffusion-ema-warmup-off', DIFFUSION_TRAIN,
           'use_ema_warmup=True', 'use_ema_warmup=False',
           'tests/test_diffusion_flags.py::test_ema_flags_reach_the_ema_model',
           'tests/test_diffusion_flags.py::test_ema_follows_the_warmup_decay_recurrence',
           what="diffusers' EMA warm-up off"),
    mutant('diffusion-noise-reversed-timestep', 'distill/adapters/diffusers.py',
           'noisy = self.noise_scheduler.add_noise(clean, noise, timesteps)',
           'noisy = self.noise_scheduler.add_noise(clean, noise, '
           'self.num_train_timesteps - 1 - timesteps)',
           'tests/test_diffusion.py::'
           'test_noisy_input_is_the_forward_process_at_the_drawn_timestep',
           what='noise added at T-1-t'),
    mutant('diffusion-heldout-left-in-training', 'distill/data/images.py',
           'return make(self.files[:-num_heldout]), make(self.files[-num_heldout:])',
           'return make(self.files), make(self.files[-num_heldout:])',
           'tests/test_diffusion_images.py::'
           'test_image_folder_split_holds_the_last_files_out_of_training',
           what='held-out images also trained on'),
    # ------------------------------------------------------------------ losses
    mutant('adm-norm-floor-changed', ADM_LOSSES,
           'NORM_FLOOR = 1e-2', 'NORM_FLOOR = 1e-3',
           'tests/test_losses.py::test_norm_floor_is_one_hundredth_of_the_mean_squared_norm',
           what='the cos_e floor 1e-2 -> 1e-3'),
    mutant('adm-weights-sign-flipped', ADM_LOSSES,
           "sign = 1.0 if emphasise == 'agreement' else -1.0",
           "sign = -1.0 if emphasise == 'agreement' else 1.0",
           'tests/test_losses.py::test_consensus_and_divergence_match_reference',
           what='w_co and w_di exchanged'),
    mutant('adm-floor-not-detached', ADM_LOSSES,
           'floor = squared.detach().mean(dim=(2, 3), keepdim=True) * eps + 1e-12',
           'floor = squared.mean(dim=(2, 3), keepdim=True) * eps + 1e-12',
           'tests/test_losses.py::test_weights_carry_no_gradient',
           'tests/test_losses.py::'
           'test_fused_adm_terms_equal_the_single_losses_in_value_and_gradient',
           what='gradient through the norm floor m(x)'),
    mutant('adm-standardise-unbiased-std', ADM_LOSSES,
           'std = flat.std(dim=-1, keepdim=True, unbiased=False)',
           'std = flat.std(dim=-1, keepdim=True, unbiased=True)',
           'tests/test_adm_terms.py::test_fused_terms_match_float64_autograd',
           what='standardised with the unbiased std'),
    mutant('adm-repel-reading-sign', ADM_LOSSES,
           "DIVERGENCE_READINGS = {'repel': (-1.0, 1.0), 'mutual': (1.0, -1.0)}",
           "DIVERGENCE_READINGS = {'repel': (1.0, 1.0), 'mutual': (1.0, -1.0)}",
           'tests/test_adm_terms.py::test_fused_terms_match_float64_autograd',
           what="'repel' weighted by w_co instead of w_di"),
    mutant('adm-fused-grad-not-batch-mean', ADM_LOSSES,
           'scale = torch.addcdiv(ctx.zero, weights, norms, value=1 / b)',
           'scale = torch.addcdiv(ctx.zero, weights, norms, value=1.0)',
           'tests/test_adm_terms.py::test_fused_terms_match_float64_autograd',
           what="the fused backward forgets the batch mean's 1/B"),
    mutant('adm-fused-times-tau', ADM_LOSSES,
           'logits, sign, value=1 / tau)', 'logits, sign, value=tau)',
           'tests/test_adm_terms.py::test_fused_terms_match_float64_autograd',
           what='softmax(S * tau) instead of S / tau'),
    mutant('kd-no-temperature-squared', LOGITS,
           'return t * t * kl.mean()', 'return t * kl.mean()',
           'tests/test_losses.py::test_kd_matches_reference',
           what='KD scaled by T, not T^2'),
    mutant('kd-target-not-detached', LOGITS,
           'target_logits = target_logits.detach() if detach_target else target_logits',
           'target_logits = target_logits',
           'tests/test_losses.py::test_distillation_gradient_reaches_learner_only',
           what='KD trains its target too'),
    mutant('dkd-alpha-beta-swapped', LOGITS,
           'return alpha * tckd + beta * nckd', 'return beta * tckd + alpha * nckd',
           'tests/test_losses.py::test_dkd_matches_reference',
           what='TCKD and NCKD weights exchanged'),
    mutant('fitnet-sum-over-channels', 'distill/losses/feature.py',
           'return (fs.float() - ft.float()).pow(2).mean(dim=1)',
           'return (fs.float() - ft.float()).pow(2).sum(dim=1)',
           'tests/test_losses.py::test_fitnet_is_mse',
           what='FitNet summed, not averaged, over channels'),
    # ------------------------------------------------------------------ distillers
    mutant('adm-cosine-tau-reversed', 'distill/distillers/adm.py',
           'ramp = (1 - math.cos(math.pi * ramp)) / 2',
           'ramp = (1 + math.cos(math.pi * ramp)) / 2',
           'tests/test_distillers.py::test_cosine_tau_schedule_rises_from_start_to_end',
           what='the cosine tau schedule runs end -> start'),
    mutant('adm-offline-teacher-di', 'distill/distillers/adm.py',
           "di_weight = self.loss_weights['di'] if self.online else 0.0",
           "di_weight = self.loss_weights['di']",
           'tests/test_distillers.py::test_term_names',
           what='offline ADM gets a teacher.di term'),
    mutant('adm-location-distance-unscaled', 'distill/distillers/adm.py',
           'return locations * weights * consensus_distance(gs, ft, detach_target)',
           'return weights * consensus_distance(gs, ft, detach_target)',
           'tests/test_sokd_distiller.py::test_without_dafa_and_dam_it_is_the_base',
           what="SoKD's per-location L_co off by a factor H*W"),
    mutant('base-online-default-ignored', BASE,
           'self.online = self.default_online if online is None else online',
           'self.online = online or self.default_online',
           'tests/test_distillers.py::test_term_names',
           what='online=False ignored for online methods'),
    mutant('base-teacher-kd-ignored', BASE,
           'w_teacher = w if self.teacher_kd is None else self.teacher_kd',
           'w_teacher = w',
           'tests/test_distillers.py::test_teacher_kd_weights_only_the_teacher_side',
           what='teacher_kd has no effect'),
    mutant('base-task-share-not-detached', BASE,
           'target = share * task.detach()', 'target = share * task',
           'tests/test_distillers.py::'
           'test_task_shares_hold_a_term_at_a_share_of_its_networks_task_loss',
           what="task_shares' factor carries a gradient"),
    mutant('base-warmup-scales-task', BASE,
           "value if name.endswith('.task') or name in exempt else value * ramp",
           'value if name in exempt else value * ramp',
           'tests/test_distillers.py::test_warmup_ramps_every_term_but_the_task_losses',
           what='the warm-up also scales the task losses'),
    mutant('base-counted-progress-off-by-one', BASE,
           'self.progress = min(self._steps_counted / self.total_steps, 1.0)',
           'self.progress = min((self._steps_counted - 1) / self.total_steps, 1.0)',
           'tests/test_distillers.py::'
           'test_a_plain_loop_ramps_the_default_warmup_by_counting_its_own_steps',
           what='a plain loop counts one step too few'),
    mutant('dkd-distiller-alpha-beta-swapped', 'distill/distillers/logits.py',
           'self.alpha, self.beta = alpha, beta', 'self.alpha, self.beta = beta, alpha',
           'tests/test_distillers.py::test_dkd_term_is_dkd_loss_at_the_configured_alpha_beta',
           what="DKD's alpha and beta exchanged"),
    # ------------------------------------------------------------------ SoKD
    mutant('sokd-mirror-overwrites-refined-kd', SOKD,
           "terms.update({k: v for k, v in mirror.items() if k.startswith('teacher.')})",
           'terms.update(mirror)',
           'tests/test_sokd_distiller.py::test_logits_base_distils_the_refined_teacher_logits',
           what="student.kd replaced by the base's unrefined one (online, DAFA on)"),
    mutant('sokd-anchor-warmed-up', SOKD,
           "return base.scale_terms(terms, exempt=('dam.anchor',))",
           'return base.scale_terms(terms)',
           'tests/test_sokd_distiller.py::test_the_base_warmup_scales_the_distillation_terms',
           what="the base's warm-up scales dam.anchor"),
    mutant('sokd-search-epochs-off-by-one', SOKD,
           'epoch <= self.search_epochs', 'epoch < self.search_epochs',
           'tests/test_sokd_distiller.py::test_search_schedule_policy_and_checkpoint',
           what='the search stops an epoch early'),
    mutant('sokd-dafa-mixes-by-default', SOKD,
           "bool(dafa.pop('sample', True))", "bool(dafa.pop('sample', False))",
           'tests/test_sokd_distiller.py::test_a_training_step_applies_one_sampled_op_by_default',
           what='a training step runs all eleven ops by default'),
    mutant('dam-mask-halves-swapped', DAM_PASS,
           "side = slice(None, half) if cfg['mask'] == 'teacher' else slice(half, None)",
           "side = slice(half, None) if cfg['mask'] == 'teacher' else slice(None, half)",
           'tests/test_sokd_dam.py::test_dam_pass_masks_of_each_mode_equal_the_old_decoding',
           what="dam.mask='teacher' decodes the student half"),
    mutant('dam-interval-off-by-one', DAM_PASS,
           "run = step % self.cfg['interval'] == 0",
           "run = (step + 1) % self.cfg['interval'] == 0",
           'tests/test_sokd_distiller.py::test_dam_interval_runs_dam_one_step_in_k',
           what='DAM skips the first step of each interval'),
    mutant('dam-input-not-detached', DAM_PASS,
           'out = self.dam.run(refined_teacher_feat.detach(), resize_to(student_feat, grid))',
           'out = self.dam.run(refined_teacher_feat, resize_to(student_feat, grid))',
           'tests/test_sokd_distiller.py::test_each_term_reaches_only_its_parameters',
           what="DAM's terms train the teacher (and DAFA)"),
    mutant('dam-masked-mean-swapped', 'distill/sokd/dam.py',
           'return torch.add(inside, outside, alpha=beta)',
           'return torch.add(outside, inside, alpha=beta)',
           'tests/test_sokd_dam.py::test_masked_mean',
           what='beta weighs the inside of the mask'),
    mutant('darts-hypergradient-sign', 'distill/sokd/hypergrad.py',
           'hyper = [d - xi * (gp - gm) / (2 * eps)',
           'hyper = [d + xi * (gp - gm) / (2 * eps)',
           'tests/test_sokd_dafa.py::test_hypergradient_matches_unrolled_reference',
           what="DARTS' second-order term with the wrong sign"),
    mutant('factored-central-step', 'distill/sokd/hypergrad.py',
           "step = 2 * eps if difference == 'central' else eps", 'step = eps',
           'tests/test_sokd_dafa.py::test_factored_hypergradient_matches_unrolled_reference',
           what='the central difference divided by eps, not 2 eps'),
    # ------------------------------------------------------------------ config checks
    mutant('config-tap-index-type-unchecked', CONFIG_CHECKS,
           "not isinstance(pair['index'], int)", "not isinstance(pair['index'], (int, str))",
           'tests/test_config_checks.py::test_tap_pairs_need_an_int_index_and_known_keys',
           what="a tap index '0' passes the check"),
    mutant('config-tap-side-keys-unchecked', CONFIG_CHECKS,
           "check_keys(where, spec, ('path', 'index'))", 'pass',
           'tests/test_config_checks.py::test_tap_pairs_need_an_int_index_and_known_keys',
           what="dict(path=, idx=) passes the check"),
    mutant('config-sokd-base-unchecked', CONFIG_CHECKS,
           "check_distiller_cfg(cfg['base'], f'{section}.base')", 'pass',
           'tests/test_config_checks.py::test_sokd_base_section_is_checked_like_a_distiller',
           what="a typo in SoKD's base section passes"),
    # ------------------------------------------------------------------ engines/core
    mutant('seed-cut-to-32-bits', 'distill/engines/core/data_order.py',
           'return int(state[0]) & (2**63 - 1)', 'return int(state[0]) & (2**32 - 1)',
           'tests/test_data_order.py::test_the_seed_is_a_function_of_its_parts_only',
           what='derived seeds of 32 bits (other data orders than before)'),
    mutant('shard-pad-rounds-down', 'distill/engines/core/data_order.py',
           'length = math.ceil(len(order) / multiple) * multiple',
           'length = len(order) // multiple * multiple',
           'tests/test_data_order.py::test_shard_fits',
           what="'pad' drops the last items instead of repeating the first"),
    mutant('trainer-progress-one-step-ahead', TRAINER,
           'set_progress(self.global_step / self.total_steps)',
           'set_progress((self.global_step + 1) / self.total_steps)',
           'tests/test_trainer_core.py::test_mid_epoch_checkpoints_resume_exactly',
           what='progress counts the step being taken'),
    mutant('trainer-updates-per-epoch-floor', TRAINER,
           'self.updates_per_epoch = -(-self.steps_per_epoch // accum)',
           'self.updates_per_epoch = self.steps_per_epoch // accum',
           'tests/test_trainer_core.py::test_epochs_count_a_short_last_accumulation_group',
           what="an epoch's short last accumulation group not counted"),
    mutant('trainer-same-global-seed-every-epoch', TRAINER,
           "torch.manual_seed(derive_seed(settings.seed, epoch, 'global', self.rank))",
           "torch.manual_seed(derive_seed(settings.seed, 1, 'global', self.rank))",
           'tests/test_trainer_core.py::test_each_epoch_draws_its_own_global_random_numbers',
           what='every epoch draws the same dropout masks'),
    mutant('checkpoints-keep-one-more', 'distill/engines/core/checkpoints.py',
           'removed = list_checkpoints(work_dir)[:-keep]',
           'removed = list_checkpoints(work_dir)[:-keep - 1]',
           'tests/test_diffusion_checkpoint_integrity.py::'
           'test_rotation_keeps_the_newest_in_step_order',
           what='rotation keeps keep + 1 checkpoints'),
    mutant('resume-lr-not-initial-lr', 'distill/engines/core/optimizers.py',
           "slot = 'initial_lr' if key == 'lr' and 'initial_lr' in group else key",
           'slot = key',
           'tests/test_trainer_core.py::'
           'test_config_optimiser_settings_win_over_the_restored_state',
           what="a resumed run's new lr is not replayed by the schedule"),
    mutant('guard-any-finite-passes', 'distill/engines/core/guards.py',
           'if bool(torch.isfinite(torch.stack([n.float() for n in norms])).all()):',
           'if bool(torch.isfinite(torch.stack([n.float() for n in norms])).any()):',
           'tests/test_guards.py::test_first_non_finite_tensor_is_named_with_its_step_and_terms',
           what='the state check passes while one tensor is finite'),
    mutant('guard-inf-terms-pass', 'distill/engines/core/guards.py',
           'bad = {name: v for name, v in values.items() if not math.isfinite(v)}',
           'bad = {name: v for name, v in values.items() if math.isnan(v)}',
           'tests/test_guards.py::test_an_infinite_term_stops_the_run_as_a_nan_does',
           what='an infinite loss term passes the guard'),
]


# ---------------------------------------------------------------------------- running
def source_files(head: bool) -> list[str]:
    """The files to copy: the last commit's, or those git tracks or would track (not ignored)
    as they are in the working tree."""
    if head:
        listing = ['git', 'ls-tree', '-r', '-z', '--name-only', 'HEAD']
    else:
        listing = ['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard']
    names = subprocess.run(listing, cwd=REPO, check=True, capture_output=True).stdout
    return sorted({name for name in names.decode().split('\0') if name})


def make_copy(head: bool) -> Path:
    copy = Path(tempfile.mkdtemp(prefix='distill-mutants-'))
    if head:
        archive = subprocess.run(['git', 'archive', 'HEAD'], cwd=REPO, check=True,
                                 capture_output=True).stdout
        subprocess.run(['tar', '-x', '-C', str(copy)], input=archive, check=True)
        return copy
    for name in source_files(head):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the working tree is left out
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    return copy


def environment(copy: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'),
               PYTHONDONTWRITEBYTECODE='1')
    env['PYTHONPATH'] = os.pathsep.join([str(copy)] + [p for p in os.environ.get(
        'PYTHONPATH', '').split(os.pathsep) if p])
    return env


def run_tests(copy: Path, tests, timeout: float, python: str):
    """``(returncode or None on timeout, failed node ids, seconds)``."""
    command = [python, '-m', 'pytest', '-n', '0', '-x', '-q', '-p', 'no:cacheprovider',
               '--no-header', '-rfE', *tests]
    start = time.monotonic()
    try:
        result = subprocess.run(command, cwd=copy, env=environment(copy), capture_output=True,
                                text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, [], time.monotonic() - start, ''
    failed = [line.split(' ', 1)[1].split(' - ')[0] for line in result.stdout.splitlines()
              if line.startswith(('FAILED ', 'ERROR '))]
    return result.returncode, failed, time.monotonic() - start, result.stdout + result.stderr


def check_imports_copy(copy: Path, python: str) -> None:
    found = subprocess.run([python, '-c', 'import distill; print(distill.__file__)'], cwd='/',
                           env=environment(copy), capture_output=True, text=True,
                           check=True).stdout.strip()
    if not Path(found).resolve().is_relative_to(copy.resolve()):
        sys.exit(f'the copy is not what Python imports (distill from {found}): check '
                 f'PYTHONPATH and the editable install')


def apply(copy: Path, item: Mutant) -> str | None:
    """The file's original text with the mutant written in its place; None if stale."""
    path = copy / item.path
    if not path.is_file():
        return None
    text = path.read_text()
    if text.count(item.original) != 1:
        return None
    path.write_text(text.replace(item.original, item.replacement))
    return text


def short(node: str) -> str:
    return node.replace('tests/', '').split('[')[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('words', nargs='*', help='only the mutants whose name holds a word')
    parser.add_argument('--list', action='store_true', help='list the mutants and exit')
    parser.add_argument('--head', action='store_true',
                        help="the last commit's files instead of the working tree's")
    parser.add_argument('--timeout', type=float, default=600,
                        help='seconds per run of a mutant\'s tests (past it: killed)')
    parser.add_argument('--keep', action='store_true', help='keep the temporary copy')
    parser.add_argument('--python', default=sys.executable, help='the interpreter of the tests')
    args = parser.parse_args(argv)
    names = [m.name for m in MUTANTS]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        sys.exit(f'mutant names used twice: {sorted(duplicates)}')
    chosen = [m for m in MUTANTS if not args.words or any(w in m.name for w in args.words)]
    if args.list:
        for item in chosen:
            print(f'{item.name:38} {item.path}: {item.what}')
            for test in item.tests:
                print(f'{"":38}   {test}')
        return 0
    if not chosen:
        sys.exit(f'no mutant matches {args.words}')

    copy = make_copy(args.head)
    try:
        check_imports_copy(copy, args.python)
        tests = sorted({test for item in chosen for test in item.tests})
        print(f'baseline: {len(tests)} tests on the unmutated copy {copy}', flush=True)
        code, failed, seconds, output = run_tests(copy, tests, args.timeout * 2, args.python)
        if code != 0:
            print(output[-4000:])
            sys.exit(f'the baseline does not pass (exit {code}, failed: {failed}): fix the '
                     f'tests or the mutants first')
        print(f'baseline passed in {seconds:.0f} s', flush=True)
        rows = []
        for item in chosen:
            original = apply(copy, item)
            if original is None:
                rows.append((item, 'STALE', 0.0, 'snippet not found exactly once'))
            else:
                try:
                    code, failed, seconds, output = run_tests(copy, item.tests, args.timeout,
                                                              args.python)
                finally:
                    (copy / item.path).write_text(original)
                if code is None:
                    rows.append((item, 'killed', seconds, f'timeout after {args.timeout:.0f} s'))
                elif code == 0:
                    rows.append((item, 'SURVIVED', seconds, ''))
                elif code in (1, 2):  # tests failed, or collection failed on the mutant
                    rows.append((item, 'killed', seconds,
                                 ', '.join(short(f) for f in failed) or f'exit {code}'))
                else:
                    rows.append((item, 'ERROR', seconds, output.strip().splitlines()[-1]
                                 if output.strip() else f'exit {code}'))
            row = rows[-1]
            print(f'{row[1]:8} {row[2]:5.0f} s  {item.name:38} {row[3]}', flush=True)
    finally:
        if args.keep:
            print(f'copy kept in {copy}')
        else:
            shutil.rmtree(copy, ignore_errors=True)

    killed = sum(row[1] == 'killed' for row in rows)
    survived = [row[0].name for row in rows if row[1] == 'SURVIVED']
    others = [f'{row[0].name} ({row[1]})' for row in rows if row[1] in ('STALE', 'ERROR')]
    print(f'\n{"mutant":38} {"file":38} result')
    for item, result, _, _ in rows:
        print(f'{item.name:38} {item.path:38} {result}')
    total = killed + len(survived)
    score = f'{killed}/{total} = {killed / total:.0%}' if total else 'n/a'
    print(f'\nscore: {score} killed' + (f'; survived: {", ".join(survived)}' if survived else '')
          + (f'; not run: {", ".join(others)}' if others else ''))
    return 1 if survived or others else 0


if __name__ == '__main__':
    sys.exit(main())
