#!/usr/bin/env bash
# GPU packing: the quick grid at 1, 0.5 and 0.25 GPU per trial; trials per hour and peak GPU memory per trial.
# Usage (from anywhere): PYTHON=python3 benchmarks/gpu_packing.sh   -> a table in $OUT (or ./gpu_packing/)
# Uses the real sweep when PYTHON has ray, optuna and pyarrow; else the same trials as concurrent processes
# sharing the GPU (torch alone). Takes ~1-3 minutes on one modern GPU; stopped at 5 minutes (the table so far is kept).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
out=${OUT:-$PWD/gpu_packing}
mkdir -p "$out"
"$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
cd "$repo"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
timeout 300 "$PYTHON" benchmarks/gpu_packing.py --out "$out" "$@" 2>&1 | tee "$out/gpu_packing.log"
