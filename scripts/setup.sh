#!/usr/bin/env bash
# Create .venv (if missing) and install dtlive with every extra (`all`: dashboard, ledger, alerts, dask, hub) and the
# test and benchmark tools. Idempotent. `pip install dtlive` alone installs the core (see README, "Installing").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# the bytecode of the installed modules is compiled on every core afterwards (pip compiles one file after another:
# 29 s against 55 s here); a file that does not compile (some packages ship such test data) is skipped, as pip does
.venv/bin/python -m pip install -q --disable-pip-version-check --no-compile -e ".[all,test,bench,docs]"
.venv/bin/python -m compileall -q -j 0 .venv/lib/python3*/site-packages >/dev/null || true
# compile the reconstruction's loops into numba's disk cache now, not in the first process that needs them
.venv/bin/python -c "from dtlive.core.products import warm_up; warm_up()"
