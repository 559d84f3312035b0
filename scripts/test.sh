#!/usr/bin/env bash
# Install everything (reusing .venv when complete) and run the whole test suite.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh all
# Small CPU models: one thread each is much faster than the default on 2 cores.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# One pytest worker per core (pytest-xdist; at most 4: the end-to-end tests start processes of
# their own), a test module per worker (--dist loadscope: a module's fixtures are built once).
# Later arguments win: bash scripts/test.sh -n 0 tests/test_losses.py runs in this process.
# (nproc counts OMP_NUM_THREADS as the cores it may use: ask it without that limit)
workers=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || echo 2)
workers=$(( workers > 4 ? 4 : workers ))
exec .venv/bin/python -m pytest -n "$workers" --dist loadscope "$@"
