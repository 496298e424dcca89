#!/usr/bin/env bash
# Set up and run the whole test suite (unit, property-based, real-broker integration).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check dtlive tests
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
