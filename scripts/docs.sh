#!/usr/bin/env bash
# Build the documentation (Sphinx, PyData theme, MyST-NB) into docs/_build/html; every warning is an error.
#
#   bash scripts/docs.sh                  # the notebooks executed, their outputs in the pages
#   bash scripts/docs.sh --no-execute     # quicker: the notebooks as committed (without outputs)
#   bash scripts/docs.sh --out DIR        # build into DIR instead
#
# The notebooks run as on Binder: binder/start brings up a stack of their own (embedded broker on a free port,
# simulated DAQ, processor, recorder, alert listener; no injected alerts) with its own state directory, ledger,
# history and artifacts in a temporary folder, and everything it started is stopped afterwards (`dtlive stop`).
# Run 591 comes from DTLIVE_DATA_DIR, else from shared/data beside the checkout when it is there; without it the
# notebooks that show it render the simulator and say so.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
EXECUTE=force
OUT=$ROOT/docs/_build/html
while [ $# -gt 0 ]; do
  case "$1" in
    --no-execute) EXECUTE=off ;;
    --out) OUT=$(realpath -m "$2"); shift ;;
    *) echo "scripts/docs.sh: unknown option $1 (--no-execute, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
"$PY" -c "import sphinx, myst_nb, pydata_sphinx_theme, sphinxarg" 2>/dev/null || {
  echo "scripts/docs.sh: the docs tools are missing: $PY -m pip install -e '.[docs]' (scripts/setup.sh does)" >&2
  exit 1; }

SPHINX=("$PY" -m sphinx -W --keep-going -E -b html -d "$OUT/../doctrees" docs "$OUT")
if [ "$EXECUTE" = off ]; then
  DTLIVE_DOCS_EXECUTE=off exec "${SPHINX[@]}"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dtlive-docs.XXXXXX")
DATA=${DTLIVE_DATA_DIR:-}
[ -n "$DATA" ] || [ ! -f "$ROOT/../shared/data/run000591_hits.csv" ] || DATA=$(realpath "$ROOT/../shared/data")
# the notebooks' stack is the build's own: nothing of the caller's dtlive or Kafka settings
while IFS= read -r name; do unset "$name"; done < <(env | grep -oE '^(DTLIVE|KAFKA)_[A-Za-z0-9_]*' || true)
[ -z "$DATA" ] || export DTLIVE_DATA_DIR=$DATA
export DTLIVE_STATE_DIR=$WORK/state DTLIVE_DB=sqlite:///$WORK/ledger.sqlite DTLIVE_HISTORY=$WORK/history
export DTLIVE_ARTIFACTS=$WORK/artifacts DTLIVE_DOCS_EXECUTE=force
export DTLIVE_BINDER_ALERT_EVERY_S=0
DTLIVE_BINDER_BROKER_PORT=$("$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
export DTLIVE_BINDER_BROKER_PORT
export PATH=$(dirname "$PY"):$PATH  # binder/start runs `python`

cleanup() {
  "$PY" -m dtlive stop >/dev/null 2>&1 || echo "scripts/docs.sh: dtlive stop failed; see $WORK/state" >&2
  # the broker binder/start started on its fixed port is recorded beside the stack, not in it
  "$PY" - "$DTLIVE_STATE_DIR" <<'PY' || echo "scripts/docs.sh: the broker may be left running" >&2
import json
import sys
from pathlib import Path

from dtlive.deploy.stack import stop_process

for path in Path(sys.argv[1]).glob("broker-*.json"):
    try:
        print("scripts/docs.sh: broker", stop_process(int(json.loads(path.read_text())["pid"]), 10), file=sys.stderr)
    except (OSError, ValueError, KeyError) as e:
        print(f"scripts/docs.sh: {path}: {e}", file=sys.stderr)
PY
  rm -rf "$WORK"
}
trap cleanup EXIT
echo "scripts/docs.sh: notebooks against their own stack (Kafka on 127.0.0.1:$DTLIVE_BINDER_BROKER_PORT);" \
  "run 591 from ${DTLIVE_DATA_DIR:-nowhere (the simulator stands in)}" >&2
started=$(date +%s)
bash binder/start "${SPHINX[@]}"
echo "scripts/docs.sh: built $OUT/index.html in $(( $(date +%s) - started )) s" >&2
