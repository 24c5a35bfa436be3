#!/usr/bin/env bash
# Install Debian's chromium (headless) for tests/test_pipeline.py, which opens the Snakemake
# report in a real browser: the report is a JavaScript app, so its text exists only once a
# browser has run it. Idempotent; needs root (CI runs as root) and Debian's package registry.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    echo "install-browser: chromium already installed"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-browser: need root or sudo" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "install-browser: $(chromium --version)"
