#!/usr/bin/env bash
# Install the classification extra (reusing .venv when complete) and run the ADM demo on the
# built-in synthetic shapes set: ADM vs DML vs independent training, a table and two PNGs.
#   bash scripts/demo.sh [demo args...]      (see: .venv/bin/python tasks/classification/demo.py -h)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh cls
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/python tasks/classification/demo.py "$@"
