"""Which method helps on my data: several distillation methods trained on your config, over
paired seeds, with the tables that say what the seeds can tell (``distill.compare``).

    python tasks/compare.py CONFIG --methods independent DML ADM "ADM offline" KD SoKD+KD \
        --seeds 0 1 2 --jobs 2 --out DIR [--set [METHOD:]KEY=VALUE ...] \
        [--teacher-ckpt PATH | --teacher-seed N] [--report]
    python tasks/compare.py --report DIR      # reprint a saved comparison, train nothing
    python tasks/compare.py --list-methods [CONFIG]

Every (method, seed) runs ``tasks/<task>/train.py`` in its own process (its work dir:
DIR/<method>/seed<k>, its output in compare.log there), --jobs at a time; a finished run is
reused and an interrupted one resumed, so the same command continues a stopped comparison.
"""
import os
import sys

try:
    import distill  # noqa: F401
except ImportError:  # running from a source checkout that is not installed
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))

if __name__ == '__main__':
    from distill.compare import main
    from distill.engines.core.cli_errors import run_entry_point
    sys.exit(run_entry_point(main))
