#!/usr/bin/env bash
# Install everything (reusing .venv when complete) and run the whole test suite.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh all
# Small CPU models: one thread each is much faster than the default on 2 cores.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/python -m pytest "$@"
