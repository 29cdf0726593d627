#!/usr/bin/env bash
# Every GPU figure of the project in one run, in about 8 minutes on one H100/H200: the CUDA tests
# first (golden vectors on CUDA, the fused blocks, attention through SDPA, compiled
# mixed-precision steps), then bench.py's JSON lines for i128, deep128, c10 and sample, plain
# float32 eager (--baseline) and the fast paths (bf16 + channels-last + compile; fp16; CUDA
# graphs for c10), with the CUDA-graph skips counted, a 2-process NCCL run where two GPUs are
# visible, scripts/utils/estimate_memory.py's i128 figure to set beside the measured peak, and
# sample.py's wall time, float32 eager against the fast path.
# Results go to $OUT (default gpu_check/); each step is time-boxed so the whole stays inside
# BUDGET seconds (default 480).
set -uo pipefail
source "$(dirname "$0")/utils/python.sh"  # $PY, from the repository root
OUT=${OUT:-gpu_check}
BUDGET=${BUDGET:-480}
mkdir -p "$OUT"
start=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - start) )); }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

# 1. Correctness on CUDA.
timeout 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_resample.py \
    tests/test_spectral_norm.py \
    2>&1 | tail -15 | tee "$OUT/tests.txt"

# 2. Speed: one JSON line per run (bench.jsonl); warnings and CUDA-graph notes in bench.log.
bench() {
    local limit=$(( $(left) < $1 ? $(left) : $1 ))
    shift
    if [ "$limit" -lt 20 ]; then echo "skipped (time): $*" | tee -a "$OUT/bench.log"; return; fi
    TORCH_LOGS=perf_hints timeout "$limit" "$PY" bench.py "$@" 2>>"$OUT/bench.log" \
        | tail -n 1 | tee -a "$OUT/bench.jsonl"
}
bench 60 --config i128 --baseline --iters 10 --warmup 2
bench 150 --config i128 --iters 20
bench 60 --config i128 --amp fp16 --no-compile --iters 10
bench 60 --config deep128 --baseline --iters 10 --warmup 2
bench 90 --config deep128 --no-compile --iters 10
bench 45 --config c10 --baseline --iters 20 --warmup 3
bench 90 --config c10 --compile_mode reduce-overhead --iters 50 --warmup 10
bench 45 --config sample --baseline --iters 10 --warmup 2
bench 60 --config sample --iters 20
echo "CUDA-graph skips: $(grep -c 'skipping cudagraphs' "$OUT/bench.log")" | tee -a "$OUT/bench.log"

# 3. Two processes over NCCL, where two GPUs are visible.
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ] && [ "$(left)" -gt 60 ]; then
    timeout "$(left)" "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 bench.py \
        --config c10 --iters 20 2>>"$OUT/bench.log" | tail -n 1 | tee -a "$OUT/bench.jsonl"
fi
# 4. The fake-tensor memory estimate of the i128 step, beside the measured peaks above.
if [ "$(left)" -gt 30 ]; then
    timeout "$(left)" "$PY" scripts/utils/estimate_memory.py --config i128 --batch_size 256 \
        2>>"$OUT/bench.log" | tail -n 1 | tee -a "$OUT/bench.jsonl"
fi
# 5. sample.py end to end (BigGAN 128 G, random weights, 2,048 images): float32 eager, then the
#    fast path; wall time per command, start-up included.
if [ "$(left)" -gt 90 ]; then
    "$PY" -c "import torch, BigGAN; torch.save(BigGAN.Generator(resolution=128, n_classes=1000,
G_ch=96, G_shared=True, shared_dim=128, hier=True, dim_z=120, G_attn='64').state_dict(),
'$OUT/g128.pth')"
    for extra in "" "--amp bf16 --channels_last"; do
        t0=$(date +%s%N)
        timeout 60 "$PY" sample.py --resolution 128 --n_classes 1000 --G_ch 96 --G_shared \
            --shared_dim 128 --hier --dim_z 120 --G_attn 64 --G_eval_mode --pbar none \
            --G_weights "$OUT/g128.pth" --samples_root "$OUT/samples" --sample_npz \
            --sample_num_npz 2048 --G_batch_size 256 $extra >>"$OUT/bench.log" 2>&1
        echo "sample.py ${extra:-float32 eager}: $(( ($(date +%s%N) - t0) / 1000000 )) ms" \
            | tee -a "$OUT/bench.log"
    done
fi
echo "gpu_check: $(( $(date +%s) - start )) s; results in $OUT/"
