#!/usr/bin/env bash
# The GPU half of experiments/results/speed.md and brain.md, as run on a lent GPU machine.
#
#   bash experiments/gpu_run.sh bench          # GPU benchmark tables (JAX vs PyTorch)
#   bash experiments/gpu_run.sh brain [SEED [LIMIT_S]]  # reproduce_brain --setting gpu: 4x, 5x, 8x side by side
#
# Results go to $OUT (or experiments/runs/gpu). Python packages the machine lacks may be given as wheels in
# .whl/ (they are installed into /tmp/site first). Each step has its own time limit, so one that fails or
# overruns still leaves the others' results.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-experiments/runs/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
case "${1:-}" in
  bench|brain) ;;
  *) echo "usage: bash experiments/gpu_run.sh bench | brain [SEED [LIMIT_S]]" >&2; exit 2 ;;
esac
if compgen -G ".whl/*.whl" > /dev/null; then
  if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl; then
    export PYTHONPATH=/tmp/site
  else
    echo "the wheels in .whl/ do not install here; using the installed packages" >&2
  fi
fi

versions() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 - <<'PY'
import importlib, jax
for name in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "numpy", "torch", "grain", "h5py"):
  try:
    print(name, importlib.import_module(name).__version__)
  except Exception as error:
    print(name, "MISSING", error)
print("devices", jax.devices())
PY
}

case "${1:-}" in
  bench)
    versions | tee "$out/versions.txt"
    : > "$out/speed_gpu.md"
    # float32 (strict: no TF32): every implementation, both models, batch 1 and 4; inference and training
    # are separate runs so that one overrunning its limit leaves the other's table.
    for mode in inference train; do
      limit=$([ "$mode" = inference ] && echo 120 || echo 170)
      timeout "$limit" python3 -m kdmri_jax.benchmark --device gpu --modes "$mode" --shapes 240x240 --batch 1 4 \
        --repeats 20 --warmup 3 --impls jax_jit jax_export torch_eager torch_eager_cl torch_compile \
        --json "$out/speed_gpu_$mode.json" --overwrite >> "$out/speed_gpu.md" 2>> "$out/speed_gpu.log"
      echo "float32 $mode benchmark exit $?"
    done
    # TF32 and bf16 (the GPU's fast paths), batch 4, and the knee shape; no torch.compile (its compile time).
    timeout 90 python3 -m kdmri_jax.benchmark --device gpu --shapes 240x240 640x368 --batch 4 --repeats 20 \
      --warmup 3 --precision tf32 bfloat16 --impls jax_jit torch_eager torch_eager_cl --no-peak \
      --json "$out/speed_gpu_precision.json" --overwrite >> "$out/speed_gpu.md" 2>> "$out/speed_gpu.log"
    echo "precision benchmark exit $?"
    cat "$out/speed_gpu.md"
    ;;
  brain)
    seeds=${2:-42} limit=${3:-560}
    versions
    # Three runs (4x, 5x, 8x) share the GPU; each takes 1/3 of its memory (reproduce_brain --parallel).
    timeout "$limit" python3 -m experiments.reproduce_brain --setting gpu --accs 4x,5x,8x --seeds "$seeds" \
      --parallel 3 --workdir /tmp/runs --out "$out/brain_gpu.md" --overwrite > "$out/brain_gpu.log" 2>&1
    echo "reproduce_brain exit $?"
    # Logs, metrics and report figures of every run (no checkpoints or reconstructions), for --collect-only.
    tar -czf "$out/brain_gpu_runs_$seeds.tar.gz" -C /tmp/runs --exclude='checkpoints' --exclude='best' \
      --exclude='*.h5' --exclude='tensorboard' . && ls -la "$out"
    tail -n 40 "$out/brain_gpu.log"
    ;;
esac

