#!/usr/bin/env bash
# The GPU rows of docs/benchmarks.md ("Many seeds in one program"): ms per update with 1 and 8 seeds in one program,
# paper-size networks, on a lent GPU machine, in one call.
#
#   here (network):  bash scripts/device_bench.sh --prepare    # wheels the GPU machine lacks -> .device/wheels
#   on the GPU:      bash scripts/device_bench.sh              # (the device tool: carry [".device"]); tables in $OUT
#   a check:         bash scripts/device_bench.sh --quick      # the same steps with tiny timings (any machine)
#
# The GPU machine has CUDA-enabled JAX, flax and optax but no network, so gymnasium (which fidec_gym imports at
# start-up) and fidec-gym itself travel as wheels; nothing else of the suite is needed to time the updates.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.device/wheels
EXTRA=(gymnasium farama-notifications cloudpickle)

if [[ "${1:-}" == "--prepare" ]]; then
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  python -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" "${EXTRA[@]}"
  python -m pip wheel -q --no-deps -w "$WHEELS" . > "$WHEELS/build.log" 2>&1 || { tail -20 "$WHEELS/build.log"; exit 1; }
  ls -l "$WHEELS"
  exit 0
fi

[[ -d "$WHEELS" ]] || { echo "no $WHEELS: run 'bash scripts/device_bench.sh --prepare' where there is a network" >&2; exit 2; }
OUT=${OUT:-results/device-bench}
mkdir -p "$OUT"
PIP_BREAK_SYSTEM_PACKAGES=1 python -m pip install -q --no-index --no-deps --find-links "$WHEELS" "${EXTRA[@]}" fidec-gym
python -c "import jax; print('backend', jax.default_backend(), jax.devices(), 'jax', jax.__version__)" | tee "$OUT/device.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$OUT/device.txt" 2>/dev/null || true
if [[ "${1:-}" == "--quick" ]]; then
  fidec bench seeds --size small --agents bc,fidec --seeds 1,2 --calls 1 --rounds 1 --updates-per-call 2 --out "$OUT/quick"
  exit 0
fi
# Paper size (4 x 512, batch 256) beside the paper's Table 5 (FQL 2.13, DeFlow 2.61, FiDec 2.72 ms on its GPU).
fidec bench seeds --size paper --agents fql,deflow,fidec --seeds 1,8 --out "$OUT/paper"
# Small networks (2 x 64), the CPU table's size.
fidec bench seeds --size small --agents bc,fql,fidec --seeds 1,8 --out "$OUT/small"
