#!/usr/bin/env bash
# Install what the paper rule and tests/test_paper.py need: latexmk and pdflatex (Debian's
# texlive-latex-recommended, texlive-fonts-recommended, latexmk) and pdftotext
# (poppler-utils). Idempotent: does nothing when they are already there. Needs root (CI
# runs as root) or sudo, and a Debian/Ubuntu package registry.
set -euo pipefail

need=()
for bin in latexmk pdflatex pdftotext; do
    command -v "$bin" >/dev/null 2>&1 || need+=("$bin")
done
if [ ${#need[@]} -eq 0 ]; then
    echo "install-tex: latexmk, pdflatex and pdftotext already installed"
    exit 0
fi
echo "install-tex: missing ${need[*]}; installing TeX Live (recommended) and poppler-utils"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends \
    texlive-latex-recommended texlive-fonts-recommended latexmk poppler-utils
