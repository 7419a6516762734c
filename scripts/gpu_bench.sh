#!/usr/bin/env bash
# The GPU benchmark suite: the GPU rows of docs/benchmarks.md (append them with --append FILE).
# On an H200 each train-step row costs 135-190 s (mostly compilation), so all rows need about
# 15 minutes; the limits below end one run within GPU_BENCH_LIMIT seconds (default 470: under
# 8 minutes, as issue 15 asks, and under the device tool's 600 s per command), the most
# important rows first.
#
#   scripts/gpu_bench.sh [--cpu] [--append FILE] [--official PATH] [--profile DIR]
#
# On a lent device machine only what the command writes under $OUT comes back, so run it as
#
#   scripts/gpu_bench.sh --append "$OUT/rows.md" --profile "$OUT/prof" 2>&1 | tee "$OUT/log"
#
# with the git-ignored wheels/ (below) carried, and copy the rows into docs/benchmarks.md here.
# For --official, copy the official checkout into the git-ignored official/ folder of this
# repository and carry it too (`--official official/dcase2025_task4_baseline`): nothing outside
# the repository travels to the device.
#
# Order: the rows the issue targets first (bf16 MFU at both settings, synthesis), so that a run
# cut short by the machine's lease still gives them, then fp32, then inference. A row starts
# only before GPU_BENCH_BUDGET seconds (default 420) have passed, and runs under `timeout`
# until GPU_BENCH_LIMIT: a row still running then is stopped and reported as timed out, the
# rows after it as skipped. In GPU mode the script stops at once, before any row, if JAX sees
# no GPU (it would otherwise fall back to the CPU and spend the lease compiling the full-size
# steps there).
#
#   1. train step (scripts/bench_train_step.py --config): ResUNetK at the baseline_1gpu setting
#      (global batch 40 = 4 x 10, 10 s) and at batch 16 (baseline, one micro-batch), fp32 and
#      bf16; ms/step, XLA:CPU's FLOPs per step (a GPU's own count misses cuDNN convolutions),
#      achieved TFLOP/s and MFU, XLA:GPU's own peak-memory figure next to the measured
#      peak_bytes_in_use (the check of the CPU memory model). The bf16 rows also trace two
#      steps (--profile, scripts/profiling.py) and print where the step's time goes: device busy
#      against the step's wall time, op time by kind and by phase, the longest ops; the traces
#      stay in --profile DIR (default: a new folder under /tmp).
#      Peaks used for MFU (dense, H100 SXM; the H200 has the same compute): bf16 989.4 TFLOP/s
#      (tensor cores); fp32 494.7 TFLOP/s (TF32 tensor cores, what XLA uses for float32
#      convolutions under JAX's default precision on GPU). Plain FP32 would be 66.9.
#   2. synthesis (scripts/bench_synthesis.py): the jitted renderer, 10-s mixtures, batch 32.
#   3. inference (scripts/bench_inference.py): tagger + ResUNetK pipeline, 10 s, batch 8.
#   4. with --official PATH (a checkout of the official 2025 baseline; torch with CUDA must be
#      there): s5jax vs the official ResUNet30 on the same GPU, forward + backward and full step,
#      fp32, 4 × 10 s, calls alternating (scripts/bench_train_step.py --official). JAX does not
#      pre-allocate for that run, so that torch finds memory.
#
# --cpu: tiny sizes on the CPU (the suite runs it in tests/test_gpu_bench.py): the tiny
# baseline_1gpu step (4 accumulated micro-batches of 1, 0.5 s), one synthesis batch, the tiny
# pipeline.
#
# Wheels. The device machines have Python 3.12 with JAX (CUDA), flax, optax, orbax, chex, h5py,
# scipy, torch, but no registry access and none of: ml_collections grain array-record portpicker
# soundfile cffi pycparser soxr torchlibrosa librosa audioread pooch platformdirs decorator
# nnAudio tensorboardX. They travel in the git-ignored folder wheels/ (6.8 MB), made here with
#
#   pip download --python-version 3.12 --only-binary=:all: --no-deps \
#     --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 -d wheels \
#     ml_collections==1.1.0 grain==0.2.18 array-record==0.8.6 portpicker==1.6.0 \
#     soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 soxr==1.1.0 torchlibrosa==0.1.0 \
#     librosa==0.11.0 audioread==3.1.0 pooch==1.9.0 platformdirs==4.14.8 decorator==5.3.1 \
#     nnAudio==0.3.4 tensorboardX==2.6.5
#
# and installed there, by this script, with pip install --no-index --no-deps --target (nothing
# outside a temporary folder is touched). Without wheels/ the script assumes the packages exist.

set -u
usage() {
  echo "usage: scripts/gpu_bench.sh [--cpu] [--append FILE] [--official PATH]" \
    "[--profile DIR]" >&2
  exit 2
}
# Paths as given, made absolute before the cd below (they are the caller's).
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
CPU=0
APPEND=()
OFFICIAL=""
PROFILE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) CPU=1 ;;
    --append|--official|--profile)
      [ $# -ge 2 ] || usage
      case "$1" in
        --append) APPEND=(--append "$(absolute "$2")") ;;
        --official) OFFICIAL="$(absolute "$2")" ;;
        --profile) PROFILE="$(absolute "$2")" ;;
      esac
      shift ;;
    *) usage ;;
  esac
  shift
done
cd "$(dirname "$0")/.."
BUDGET=${GPU_BENCH_BUDGET:-420}
LIMIT=${GPU_BENCH_LIMIT:-470}
PROFILE=${PROFILE:-$(mktemp -d /tmp/s5jax-gpu-profile.XXXXXX)}

PY=${PYTHON:-python3}
if [ "$CPU" = 0 ] && ! "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')"; then
  echo "gpu_bench: JAX sees no GPU (backend: $("$PY" -c 'import jax; print(jax.default_backend())'))." \
    "Use --cpu for the CPU suite." >&2
  exit 1
fi
if [ -d wheels ] && ls wheels/*.whl >/dev/null 2>&1 && [ "$CPU" = 0 ]; then
  SITE=$(mktemp -d /tmp/s5jax-wheels.XXXXXX)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" wheels/*.whl || exit 1
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
# The batch-16 fp32 step needs more than JAX's default 75 % pre-allocation of an 80 GB card.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}

FAILED=0
SKIPPED=0
run() {  # one benchmark; a failure is reported and the suite goes on
  echo "== $*"
  local left=$((LIMIT - SECONDS))
  if [ "$SECONDS" -ge "$BUDGET" ] || [ "$left" -le 0 ]; then
    echo "SKIPPED (${SECONDS} s spent: rows start before ${BUDGET} s and end by ${LIMIT} s): $*"
    SKIPPED=$((SKIPPED + 1)); return
  fi
  local t0=$SECONDS rc=0
  timeout --kill-after=10 "$left" "$PY" "$@" ${APPEND[@]+"${APPEND[@]}"} || rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "TIMED OUT (stopped at the suite's ${LIMIT}-s limit): $*"; FAILED=$((FAILED + 1))
  elif [ "$rc" != 0 ]; then
    echo "FAILED: $*"; FAILED=$((FAILED + 1))
  fi
  echo "   ($((SECONDS - t0)) s)"
}

"$PY" -c "import jax, flax, optax; print('devices:', jax.devices(), 'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__)"
if [ "$CPU" = 1 ]; then
  run scripts/bench_train_step.py --config configs/resunetk.py:baseline_1gpu,smoke --batch 4 \
    --seconds 0.5 --repeats 1 --profile "$PROFILE/baseline_1gpu_smoke"
  run scripts/bench_synthesis.py --batch 1 --repeats 1
  run scripts/bench_inference.py --small --seconds 0.5 --batch 1 --repeats 1 --no-torch
else
  run scripts/bench_train_step.py --config configs/resunetk.py:baseline_1gpu,bf16 --repeats 3 \
    --profile "$PROFILE/baseline_1gpu_bf16"
  run scripts/bench_synthesis.py --batch 32 --repeats 3
  if [ -n "$OFFICIAL" ]; then
    XLA_PYTHON_CLIENT_PREALLOCATE=false run scripts/bench_train_step.py --official "$OFFICIAL" \
      --batch 4 --seconds 10 --repeats 3
  fi
  run scripts/bench_train_step.py --config configs/resunetk.py:baseline,bf16 --batch 16 --repeats 3 \
    --profile "$PROFILE/baseline_bf16_b16"
  run scripts/bench_train_step.py --config configs/resunetk.py:baseline_1gpu --repeats 3
  run scripts/bench_train_step.py --config configs/resunetk.py:baseline --batch 16 --repeats 3
  run scripts/bench_inference.py --seconds 10 --batch 8 --repeats 3 --no-torch
fi
echo "gpu_bench: $FAILED failed, $SKIPPED skipped, ${SECONDS} s in all; traces in $PROFILE"
exit $((FAILED > 0))
