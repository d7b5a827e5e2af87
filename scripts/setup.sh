#!/usr/bin/env bash
# Installs every Debian package Medley needs. Idempotent: installs only what is missing.
set -euo pipefail

packages=(
  pkg-config
  libopenmpi-dev
  openmpi-bin
  libprotobuf-c-dev
  protobuf-c-compiler
  libopenblas-dev
  ocl-icd-opencl-dev
  opencl-c-headers
  pocl-opencl-icd
  clinfo
  slurm-wlm
  munge
  iproute2
  fortunes
  python3-matplotlib
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all system packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "setup: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
