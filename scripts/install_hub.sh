#!/usr/bin/env bash
# Install what jupyterhub_config.py needs: JupyterHub and jupyterhub-idle-culler (pip: the `hub` extra) into
# .venv, and configurable-http-proxy (npm) into the project-local .node/ (found there by dtlive.deploy.hub).
# Idempotent: does nothing when both are there. Node/npm come from Debian when missing (root or sudo -n).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import jupyterhub, jupyterhub_idle_culler" 2>/dev/null; then
  echo "installing jupyterhub and jupyterhub-idle-culler (pip install -e '.[hub]') ..." >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[hub]"
fi
CHP=.node/node_modules/.bin/configurable-http-proxy
if [ ! -x "$CHP" ]; then
  if ! command -v npm >/dev/null; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
    echo "installing Debian's nodejs and npm ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -q --no-install-recommends nodejs npm >/dev/null 2>&1 || {
      $SUDO apt-get update -q >/dev/null
      $SUDO apt-get install -y -q --no-install-recommends nodejs npm >/dev/null
    }
  fi
  echo "installing configurable-http-proxy into .node/ (npm) ..." >&2
  mkdir -p .node
  printf '# installed by scripts/install_hub.sh\n*\n' > .node/.gitignore
  npm install --prefix .node --no-audit --no-fund --loglevel=error configurable-http-proxy@5 >/dev/null
fi
[ -f .node/.gitignore ] || printf '# installed by scripts/install_hub.sh\n*\n' > .node/.gitignore
"$CHP" --version >/dev/null
