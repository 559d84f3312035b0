#!/usr/bin/env bash
# Create (or reuse) the project's environment in .venv/ with the given extras installed.
#   bash scripts/install.sh [EXTRAS]      EXTRAS: cls (default), diffusion, seg, det, all, "all,test"
# Versions come from requirements/constraints.txt. mmcv (seg/det) comes from ../shared/wheels
# when a prebuilt wheel is there, and is built from source otherwise (tens of minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-cls}"
venv=.venv
python="${PYTHON:-python3}"
constraints=requirements/constraints.txt
wheels=../shared/wheels

key=$(cat setup.cfg pyproject.toml "$constraints" | sha1sum | cut -c1-12)
stamp="$venv/.installed-${extras//,/_}-$key"
if [ -f "$stamp" ]; then
  echo "[install] .venv is complete for extras '$extras'"
  exit 0
fi

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -c "$constraints")
[ -d "$wheels" ] && pip+=(--find-links "$wheels")

# torch first and pinned: a plain 'torch' requirement would pull a multi-GB CUDA build.
"${pip[@]}" -q "torch==$(grep -Po '^torch==\K.*' "$constraints")"

if [[ ",$extras," =~ ,(seg|det|all), ]] && ! "$venv/bin/python" -c 'import mmcv.ops' 2>/dev/null; then
  if ! ls "$wheels"/mmcv-*.whl >/dev/null 2>&1; then
    echo "[install] no prebuilt mmcv wheel in $wheels: building mmcv from source (tens of minutes)"
    "${pip[@]}" -q "setuptools<70" wheel
    MMCV_WITH_OPS=1 "${pip[@]}" --no-build-isolation mmcv
  fi
fi

"${pip[@]}" -q -e ".[$extras]"
touch "$stamp"
echo "[install] .venv ready with extras '$extras'"
