#!/usr/bin/env bash
# Member-runs per hour of the real sweep (Ray, --gpus-per-trial) on one GPU: (a) one trial per GPU, (b) 0.25 GPU
# per trial, (c) packs of 5 seeds at 1/8 GPU, (d) packs of 5 seeds at 1/16 GPU, on the gpu-slice grid (200 steps).
# One run, hard-stopped after GPU_SWEEP_TIMEOUT seconds (default 300) with the table so far kept; each setting's
# row is written to $OUT/gpu_sweep.md as soon as it ends. See benchmarks/gpu_sweep.py and BENCHMARKS.md.
#
#   OUT=/tmp/gs bash benchmarks/gpu_sweep.sh                 # on a GPU machine (needs torch with CUDA)
#   GPU_SWEEP_SMOKE=1 OUT=/tmp/gs bash benchmarks/gpu_sweep.sh   # CPU smoke: 2 tiny settings, checks the path only
#
# Where Ray is not importable it installs the carried wheels of ../shared/tools/gpu-wheels.sh (.whl/ in the
# repository root) into /tmp/site. $OUT ends with at most 4 files: gpu_sweep.md (the table), gpu_sweep.json,
# gpu_sweep.log (everything printed) and gpu_sweep_runs.tar (the sweeps' frames and Ray result files).
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
out=${OUT:-/tmp/gpu_sweep}
smoke=${GPU_SWEEP_SMOKE:-0}
for a in "$@"; do [[ $a == --smoke ]] && smoke=1; done
mkdir -p "$out" && out=$(cd "$out" && pwd)
cd "$repo" || exit 2
export RAY_AUTH_MODE=disabled PYTHONUNBUFFERED=1 GPU_SWEEP_SMOKE=$smoke

main() {
"$PYTHON" - "$smoke" <<'PY'
import sys, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), torch.ones(1, device="cuda").item())  # a context really starts
elif sys.argv[1] != "1":
    sys.exit("gpu_sweep.sh: torch sees no CUDA device; on a CPU-only machine run the smoke mode (GPU_SWEEP_SMOKE=1)")
PY
[[ $? == 0 ]] || return 2
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

if ! "$PYTHON" -c 'import ray.tune, optuna, pyarrow' 2>/dev/null; then
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        echo "gpu_sweep.sh: Ray/Optuna not importable and no .whl/ here: build it with ../shared/tools/gpu-wheels.sh and carry .whl"
        return 2
    fi
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 2
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c 'import ray, optuna; print("ray", ray.__version__, "optuna", optuna.__version__)' || return 2

# The helper stops its running setting on SIGTERM and keeps its row; -k kills it 25 s later if that hangs.
timeout -k 25 "${GPU_SWEEP_TIMEOUT:-300}" "$PYTHON" benchmarks/gpu_sweep.py --out "$out" "$@"
rc=$?
if [[ -f $out/sweep.pgid ]]; then   # the helper was killed while a sweep ran: end that sweep's process group
    kill -KILL -- "-$(cat "$out/sweep.pgid")" 2>/dev/null; rm -f "$out/sweep.pgid"
fi
"$PYTHON" benchmarks/gpu_sweep.py --out "$out" --archive-only   # a setting killed mid-run: its files into the tar
[[ $rc == 124 || $rc == 137 ]] && echo "gpu_sweep.sh: stopped after ${GPU_SWEEP_TIMEOUT:-300} s; the table holds the settings that ended"
echo; cat "$out/gpu_sweep.md" 2>/dev/null || echo "gpu_sweep.sh: no setting ended, no table"
return $rc
}

main "$@" 2>&1 | tee -a "$out/gpu_sweep.log"
exit "${PIPESTATUS[0]}"
