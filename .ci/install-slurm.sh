#!/usr/bin/env bash
# Install what tests/test_slurm.py needs for a single-node SLURM on localhost:
# slurmctld, slurmd, the client commands (sbatch, squeue, scontrol, srun) and munge.
# Idempotent: does nothing when they are already there. Needs root (CI runs as root)
# and a Debian/Ubuntu package registry. Starts no daemon: the test starts and stops
# its own (tests/slurm_cluster.py).
set -euo pipefail

need=()
for bin in slurmctld slurmd sbatch squeue scontrol srun munged; do
    command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need+=("$bin")
done
if [ ${#need[@]} -eq 0 ]; then
    echo "install-slurm: slurm and munge already installed"
    exit 0
fi
echo "install-slurm: missing ${need[*]}; installing slurm-wlm and munge"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-slurm: need root or sudo" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
# Package scripts must not start daemons (containers have no init; the test starts
# its own): policy-rc.d exit 101 forbids it, and is removed again afterwards.
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    added_policy=1
fi
cleanup() { if [ "$added_policy" = 1 ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT

$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends slurm-wlm munge
for bin in slurmctld slurmd sbatch squeue scontrol srun munged; do
    command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || {
        echo "install-slurm: $bin still missing after install" >&2
        exit 1
    }
done
echo "install-slurm: done ($(sbatch --version))"
