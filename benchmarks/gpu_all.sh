#!/usr/bin/env bash
# Every GPU measurement of issues 12 and 19 in one run, under ~8 minutes on one H100 (each step
# has its own time limit; the limits add up to 480 s). From the repository root, on the GPU machine:
#
#     bash benchmarks/gpu_all.sh [OUT_DIR]          # default: $OUT, else ./gpu-results
#
# Writes OUT_DIR/{gpu,check_step,bench_train,bench_generate,bench_sweep}.txt (5 files); gpu.txt also
# lists the library versions and whether they meet synaug's floors (diffusers>=0.40, transformers>=5.0:
# bench_generate needs them; the other steps need only torch and pydantic).
#
# Steps (see each script's docstring):
#   check_step      CUDA-graphed / compiled step vs eager numerics (exit 1 if graph != eager within
#                   1e-6 or a graphed mode ran eagerly), compiled + graphed (every variant compiled
#                   in its warm-up, before capture), the streaming loader with pinned memory graphed
#                   (the pin-memory thread allocates during captures), host syncs per epoch
#   bench_train     img/s: our step eager / CUDA graphs / compiled / compiled+graphs vs pure compute
#                   (eager and one CUDA graph), ResNet-32, batch 128, 12,800 images per round
#   bench_generate  SD 1.5-sized random pipeline, fp16, 10 DPM++ steps: img/s at 512 and 256 px,
#                   batch 1-32, channels_last, torch.compile of the UNet at 512x8 and 256x32, peak
#                   memory, end-to-end `synaug generate` rate, projection for 39,153 images
#   bench_sweep     4 small runs one after another vs 4 at once on the GPU (`synaug sweep`)
#
# On this workplace's device machines ('python3' = /opt/torch/.venv, torch 2.11) pydantic and
# diffusers are missing. Before the call, here in the repo root (Python 3.12 wheels):
#     echo /.whl/ >> .git/info/exclude
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
#       diffusers==0.42.1 importlib-metadata==10.2.0
# and run with carry [".whl"] and the command:
#     python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#       .whl/*.whl && export PYTHONPATH=/tmp/site || exit; bash benchmarks/gpu_all.sh "$OUT"
# If gpu.txt reports transformers older than 5.0 there, add transformers and the huggingface_hub /
# tokenizers it requires to the download list (`pip download` without --no-deps shows them).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu-results}}
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
status=0
step() {  # step NAME LIMIT_S command...
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit} s, started $(date +%T))"
  timeout "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.txt"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "=== $name exited $rc" | tee -a "$OUT_DIR/$name.txt"; status=1; }
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $PY -c "import torch; print('torch', torch.__version__)"
  $PY - <<'PYEOF'
from importlib.metadata import PackageNotFoundError, version
for pkg in ("pydantic", "diffusers", "transformers", "huggingface_hub"):
    try:
        print(pkg, version(pkg))
    except PackageNotFoundError:
        print(pkg, "missing")
try:
    from synaug.generate.diffusers_backend import check_versions
    check_versions()
    print("synaug version floors: met")
except Exception as e:  # reported, not fatal: only bench_generate needs diffusers / transformers
    print(f"synaug version floors: NOT met ({e}); bench_generate will fail")
PYEOF
} 2>&1 | tee "$OUT_DIR/gpu.txt"
step check_step 130 $PY benchmarks/check_step_gpu.py --compile --stream
step bench_train 130 $PY benchmarks/bench_train.py --device cuda --toy --batches 100 --rounds 2 --compile
step bench_generate 160 $PY benchmarks/bench_generate_sd.py --device cuda --repeats 1 --budget-s 115 \
  --batch-sizes 1 4 8 16 32 --compile-points 512x8 256x32
step bench_sweep 60 $PY benchmarks/bench_sweep.py --device cuda --seeds 4 --per-device 4 --images 5000 --epochs 2
exit $status
