#!/usr/bin/env bash
# Install fidec-gym and everything it needs on a fresh Debian/Ubuntu machine.
#   bash scripts/install.sh          # the package (training, leaderboards, quickstart)
#   bash scripts/install.sh --test   # plus the test tools and a headless browser for the report test
# System packages: Mesa EGL/OSMesa for offscreen MuJoCo rendering, ffmpeg-free (imageio-ffmpeg ships its own),
# and Chromium for the HTML report test. Uses sudo when not root.
set -euo pipefail

with_tests=0
for arg in "$@"; do
  case "$arg" in
    --test) with_tests=1 ;;
    *) echo "usage: bash scripts/install.sh [--test]" >&2; exit 2 ;;
  esac
done

packages=(libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1 libglx-mesa0 libosmesa6)
if [ "$with_tests" = 1 ]; then packages+=(chromium); fi

if command -v apt-get >/dev/null 2>&1; then
  sudo_cmd=""
  if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
  missing=()
  for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing system packages: ${missing[*]}"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
else
  echo "apt-get not found: install EGL/OSMesa (and Chromium for the tests) with your system's package manager" >&2
fi

python -m pip install --quiet --upgrade "pip>=23"
if [ "$with_tests" = 1 ]; then
  # The experts extra (stable-baselines3) needs torch; install its CPU build first, a bare "torch" pulls CUDA.
  python -m pip install --quiet "torch==2.13.0"
  python -m pip install --quiet -e ".[test,ray,logging,experts]"
else
  python -m pip install --quiet -e .
fi
python -c "import gymnasium as gym, fidec_gym; n = sum(k.startswith('fidec/') for k in gym.registry); print(f'fidec-gym installed: {n} tasks registered')"
