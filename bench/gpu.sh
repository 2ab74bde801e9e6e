#!/usr/bin/env bash
# geneval's GPU benchmarks, ready to run on a machine with one CUDA GPU.
#
# Run from the repository root after installing the test environment as README.md says:
#   python3 -m venv .venv-test && .venv-test/bin/pip install -e ".[test]"
#   bash bench/gpu.sh
# (PYTHON=/path/to/python picks another interpreter.) Nothing is downloaded: Inception uses the
# real weights when they are in the torch hub cache, else random weights in the published layout.
#
# Steps, each under its own `timeout` (a failed or timed-out step is reported and the next one
# runs); about 5 minutes in all on an H100, at most 9m40s:
#   1. FID + KID + IS from one pass against torch-fidelity (and FID against pytorch-fid) at
#      10 000 images per folder: bench/bench_fid.py
#   2. the whole pipeline against a bare cuDNN forward at 1000 images: bench/bench_pipeline.py
#      (when present)
#   3. tf32 and bf16 against fp32: feature deviations and the FID they add: bench/bench_precision.py
#   4. `--nproc` scaling: CPU ranks (one GPU gives one CUDA rank), and the one CUDA rank:
#      bench/bench_nproc.py
#   5. the Fréchet distance against scipy sqrtm, full rank and singular: bench/bench_frechet.py
# Everything printed also goes to bench/results/gpu-<UTC time>.log.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv-test/bin/python ]; then PYTHON=.venv-test/bin/python
  elif [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python
  else PYTHON=python3
  fi
fi

mkdir -p bench/results
log="bench/results/gpu-$(date -u +%Y%m%dT%H%M%SZ).log"
failures=0

step() {  # step TITLE SECONDS COMMAND...: run COMMAND under `timeout SECONDS`, report, go on
  local title=$1 limit=$2
  shift 2
  echo
  echo "== $title (limit ${limit} s)"
  echo "\$ $*"
  local start=$SECONDS code
  timeout --kill-after=10 "$limit" "$@"
  code=$?
  if [ "$code" -eq 124 ] || [ "$code" -eq 137 ]; then
    echo "-- $title: timed out after ${limit} s"
    failures=$((failures + 1))
  elif [ "$code" -ne 0 ]; then
    echo "-- $title: failed (exit $code) after $((SECONDS - start)) s"
    failures=$((failures + 1))
  else
    echo "-- $title: done in $((SECONDS - start)) s"
  fi
}

main() {
  echo "geneval GPU benchmarks, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); python $PYTHON"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  fi
  if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA device visible to $PYTHON: nothing to measure"
    return 1
  fi
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name(0)); \
print('cpu cores', __import__('os').cpu_count())"
  # A private feature cache, so that no step reads another run's features.
  GENEVAL_CACHE=$(mktemp -d)
  export GENEVAL_CACHE
  local total=$SECONDS

  step "1. FID+KID+IS vs torch-fidelity, FID vs pytorch-fid, 10 000 images" 240 \
    "$PYTHON" bench/bench_fid.py --device cuda --num-images 10000 --batch-size 200 --repeat 1

  if [ -f bench/bench_pipeline.py ]; then
    step "2. pipeline vs bare cuDNN forward, 1000 images" 90 \
      "$PYTHON" bench/bench_pipeline.py --device cuda --num-images 1000
  else
    echo
    echo "== 2. pipeline vs bare cuDNN forward: skipped (no bench/bench_pipeline.py)"
  fi

  step "3. tf32 and bf16 vs fp32, 1000 images" 60 \
    "$PYTHON" bench/bench_precision.py --device cuda --num-images 1000 --batch-size 100

  step "4a. --nproc scaling, CPU ranks, 256 + 256 images" 100 \
    "$PYTHON" bench/bench_nproc.py --device cpu --num-images 256 --nproc 1,2,4,8
  step "4b. --nproc on the GPU (one rank per GPU), 256 + 256 images" 40 \
    "$PYTHON" bench/bench_nproc.py --device cuda --num-images 256 --nproc 1,2

  step "5. Fréchet distance vs scipy sqrtm, full rank and singular" 50 \
    "$PYTHON" bench/bench_frechet.py --device cuda --repeat 2

  rm -rf "$GENEVAL_CACHE"
  echo
  echo "== all steps: $((SECONDS - total)) s, $failures failed or timed out"
  [ "$failures" -eq 0 ]
}

main 2>&1 | tee "$log"
code=${PIPESTATUS[0]}
echo "log: $log"
exit "$code"
