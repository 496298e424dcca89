#!/usr/bin/env bash
# The main job in one command: set up, then embedded broker + simulator + processor + live summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/dtlive demo "$@"
