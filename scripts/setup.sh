#!/usr/bin/env bash
# Create .venv (if missing) and install dtlive with every extra (`all`: dashboard, ledger, alerts, dask, hub) and the
# test and benchmark tools. Idempotent. `pip install dtlive` alone installs the core (see README, "Installing").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# --no-compile: a module's bytecode is written when it is first imported, not for every file installed (a third
# quicker on a new machine: 91 s against 146 s here)
.venv/bin/python -m pip install -q --disable-pip-version-check --no-compile -e ".[all,test,bench,docs]"
# compile the reconstruction's loops into numba's disk cache now, not in the first process that needs them
.venv/bin/python -c "from dtlive.core.products import warm_up; warm_up()"
