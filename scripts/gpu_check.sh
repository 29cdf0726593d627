#!/usr/bin/env bash
# Every GPU figure of the project in one run of about 7 minutes on one H100 or H200, the most
# valuable first, so that a run cut short still has them: BigGAN-128 training in bf16 +
# channels-last + compile, its float32 eager baseline (with the FLOP count), G_ema sampling,
# BigGAN-deep-128 at a batch that fits the card, CIFAR with CUDA graphs, then tests/test_cuda.py
# (at most TEST_TIMEOUT_S per test), then the baselines of sampling and CIFAR and sample.py end
# to end, while time is left.
#
#   OUT=gpu_out bash scripts/gpu_check.sh   # on the GPU machine
#   bash scripts/gpu_check.sh --dry-run     # every step on the CPU at tiny sizes, in about a
#                                           # minute (tests/test_gpu_check.py runs it)
#
# Every step appends exactly one JSON line {"step", "rc", "seconds", ...figures} to
# $OUT/gpu.jsonl, whatever happens to it (scripts/utils/gpu_step.py; rc 124: out of time; a step
# skipped for want of time says so). Each step's stdout, stderr and torch logs (graph breaks,
# recompiles, CUDA-graph skips) are in $OUT/logs/STEP.{out,err,torch.log}; weights and samples
# go to a temporary folder, not $OUT. Environment: PY (default python3), OUT (default
# gpu_check/; with --dry-run a new temporary folder), BUDGET (seconds for all steps, default
# 420), TEST_TIMEOUT_S (default 90), GPU_CHECK_FAIL=STEP (that step runs a command that prints
# and fails instead: how the tests check the failure path).
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
case "${1:-}" in
    --dry-run) DRY=1 ;;
    '') ;;
    *) echo "error: unknown argument '$1' (the only option is --dry-run)" >&2; exit 2 ;;
esac
PY=${PY:-python3}
BUDGET=${BUDGET:-420}
export PYTHONUNBUFFERED=1
export TORCH_LOGS=${TORCH_LOGS:-graph_breaks,recompiles,perf_hints}
if [ "$DRY" = 1 ]; then OUT=${OUT:-$(mktemp -d)}; else OUT=${OUT:-gpu_check}; fi
JSONL=$OUT/gpu.jsonl
mkdir -p "$OUT/logs"
SCRATCH=$(mktemp -d)  # weights and samples: larger than what may come back from $OUT
trap 'rm -rf "$SCRATCH"' EXIT
start=$SECONDS

left() { echo $(( BUDGET - (SECONDS - start) )); }
lines() { if [ -f "$JSONL" ]; then wc -l < "$JSONL"; else echo 0; fi; }

# step NAME CAP MIN [gpu_step.py options] -- COMMAND ...: COMMAND for at most CAP seconds and
# what is left of the budget; skipped (with its line) where fewer than MIN seconds are left.
# --dry-run: no caps, any time left will do (a loaded CPU is slow, and no step may be lost).
step() {
    local name=$1 cap=$2 min=$3 limit before opts=()
    shift 3
    while [ "$1" != -- ]; do opts+=("$1"); shift; done
    shift
    [ "$DRY" = 1 ] && cap=$BUDGET min=1
    limit=$(left)
    [ "$limit" -gt "$cap" ] && limit=$cap
    before=$(lines)
    if [ "$limit" -lt "$min" ]; then
        printf '{"step": "%s", "rc": null, "seconds": 0, "skipped": "%s s left, needs %s"}\n' \
            "$name" "$(left)" "$min" >> "$JSONL"
    else
        if [ "${GPU_CHECK_FAIL:-}" = "$name" ]; then  # stray output, a figure, an error
            set -- "$PY" -c 'import json, sys
print("Preparing EMA for G")
print(json.dumps({"made_to_fail": 1}))
sys.exit("error: made to fail (GPU_CHECK_FAIL)")'
        fi
        TORCH_LOGS_OUT="$OUT/logs/$name.torch.log" "$PY" scripts/utils/gpu_step.py \
            --jsonl "$JSONL" --logs "$OUT/logs" --step "$name" --timeout "$limit" \
            ${opts[@]+"${opts[@]}"} -- "$@"
        local rc=$?
        if [ "$(lines)" = "$before" ]; then  # gpu_step.py could not run or was killed
            printf '{"step": "%s", "rc": null, "seconds": null, "error": "%s"}\n' \
                "$name" "gpu_step.py exited with $rc and wrote no line" >> "$JSONL"
        fi
    fi
    tail -n 1 "$JSONL"  # progress on the console
}

# Sizes. --dry-run: the same steps on the CPU at a width of 8 and batch 1, eager, one timed
# iteration and no warm-up (the flags given last win).
BENCH=("$PY" bench.py)
TINY=()
G_CH=96 SAMPLES=2048 SAMPLE_BATCH=256
DEEP_BATCH=${DEEP_BATCH:-256}
if [ "$DRY" = 1 ]; then
    TINY=(--device cpu --ch 8 --batch_size 1 --warmup 0 --iters 1 --no-compile)
    G_CH=8 SAMPLES=2 SAMPLE_BATCH=1
else
    nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
    # BigGAN-deep-128 in bf16, channels-last, batch 256: 42.6 GiB of tensors at the peak
    # (scripts/utils/estimate_memory.py), more reserved: batch 128 on cards under 64 GB.
    mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1)
    if [ -n "$mib" ] && [ "${mib%%[!0-9]*}" -lt 64000 ] 2>/dev/null; then DEEP_BATCH=128; fi
fi

step device 60 5 -- "$PY" -c 'import json, torch
cuda = torch.cuda.is_available()
p = torch.cuda.get_device_properties(0) if cuda else None
print(json.dumps({"name": p.name if cuda else "cpu", "gpus": torch.cuda.device_count(),
                  "memory_gib": round(p.total_memory / 2 ** 30, 1) if cuda else None,
                  "capability": f"{p.major}.{p.minor}" if cuda else None,
                  "torch": torch.__version__, "cuda": torch.version.cuda,
                  "cudnn": torch.backends.cudnn.version() if cuda else None}))'
# The fast paths time 20 iterations in blocks of 5 (bench.py's CUDA default), after warm-up
# iterations that compile; their FLOPs are the baselines' (the same eager float32 step).
step i128_fast 200 60 -- "${BENCH[@]}" --config i128 --warmup 3 --iters 20 --no_flops \
    ${TINY[@]+"${TINY[@]}"}
step i128_baseline 90 30 -- "${BENCH[@]}" --config i128 --baseline --warmup 2 --iters 10 \
    ${TINY[@]+"${TINY[@]}"}
step sample_fast 120 40 -- "${BENCH[@]}" --config sample --warmup 3 --iters 20 --no_flops \
    ${TINY[@]+"${TINY[@]}"}
step deep128_fast 90 30 -- "${BENCH[@]}" --config deep128 --no-compile --batch_size "$DEEP_BATCH" \
    --warmup 2 --iters 10 --no_flops ${TINY[@]+"${TINY[@]}"}
step c10_cuda_graphs 150 60 -- "${BENCH[@]}" --config c10 --compile_mode reduce-overhead \
    --warmup 10 --iters 50 --no_flops ${TINY[@]+"${TINY[@]}"}
step cuda_tests 400 60 --pytest -- env TEST_TIMEOUT_S="${TEST_TIMEOUT_S:-90}" \
    "$PY" -m pytest -v -rA -p no:cacheprovider tests/test_cuda.py
# While time is left: the baselines these speed-ups are measured against, and sample.py.
step sample_baseline 60 25 -- "${BENCH[@]}" --config sample --baseline --warmup 2 --iters 10 \
    ${TINY[@]+"${TINY[@]}"}
step c10_baseline 60 25 -- "${BENCH[@]}" --config c10 --baseline --warmup 3 --iters 20 \
    ${TINY[@]+"${TINY[@]}"}
step sample_py_weights 30 15 -- "$PY" -c "import sys, torch, BigGAN
torch.save(BigGAN.Generator(resolution=128, n_classes=1000, G_ch=int(sys.argv[1]), G_shared=True,
           shared_dim=128, hier=True, dim_z=120, G_attn='64').state_dict(), sys.argv[2])" \
    "$G_CH" "$SCRATCH/g128.pth"
# Wall time with start-up: BigGAN-128 G with random weights, bf16 + channels-last.
step sample_py 60 30 --note images="$SAMPLES" -- "$PY" sample.py --resolution 128 \
    --n_classes 1000 --G_ch "$G_CH" --G_shared --shared_dim 128 --hier --dim_z 120 --G_attn 64 \
    --G_eval_mode --pbar none --G_weights "$SCRATCH/g128.pth" --samples_root "$SCRATCH/samples" \
    --sample_npz --sample_num_npz "$SAMPLES" --G_batch_size "$SAMPLE_BATCH" --amp bf16 \
    --channels_last
echo "gpu_check: $(( SECONDS - start )) s; $(lines) lines in $JSONL"
