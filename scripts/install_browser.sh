#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests (Playwright drives it; no browser download from the internet).
# Idempotent: does nothing when /usr/bin/chromium exists. Needs root or passwordless sudo.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
echo "installing Debian's chromium for the browser tests ..." >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || {
  $SUDO apt-get update -q >/dev/null
  $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null
}
/usr/bin/chromium --version >&2
