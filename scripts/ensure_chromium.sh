#!/usr/bin/env bash
# Make sure headless Chromium is installed (the HTML report test opens the backtest report in
# it and takes a screenshot). Installed already -> nothing to do (silent, exit 0); otherwise
# `apt-get install -y chromium` (Debian's package; needs root or password-less sudo).
# Idempotent. The tests themselves never install anything.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "ensure_chromium: ERROR: not root and no sudo" >&2; exit 1; }
    SUDO="sudo -n"
fi
echo "ensure_chromium: installing chromium (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null 2>&1 || { echo "ensure_chromium: ERROR: chromium still missing" >&2; exit 1; }
