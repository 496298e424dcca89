#!/usr/bin/env bash
# Set up and run the whole test suite (unit, property-based, real-broker, notebook and browser tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install_browser.sh   # Debian chromium for the Playwright browser tests
bash scripts/install_hub.sh       # JupyterHub, its idle culler and configurable-http-proxy for tests/deploy/test_hub.py
.venv/bin/ruff check .
.venv/bin/lint-imports --no-cache  # the layering contract in pyproject.toml
# no repeated logic in the package, on the second core while the type checker runs on the first
.venv/bin/pylint --disable=all --enable=duplicate-code --score=n dtlive &
duplicate_check=$!
.venv/bin/mypy dtlive  # the type checker on the whole package ([tool.mypy] in pyproject.toml)
wait "$duplicate_check"
# three workers on two cores: tests wait on brokers, browsers and subprocesses more than they compute; a file
# stays on one worker; the files start in the order tests/conftest.py collects them (the longest first)
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n 3 --dist loadfile --no-loadscope-reorder "$@"
