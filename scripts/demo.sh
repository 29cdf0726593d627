#!/usr/bin/env bash
# The main job: train a small BigGAN on Fashion-MNIST (32 x 32, 10 classes), offline, and score
# it with a Fashion-MNIST classifier that ships with the code (scripts/utils/score_fmnist.py).
#
# Makes or reuses the virtual environment (.venv), installs what is missing (requirements;
# Fashion-MNIST from Debian's dataset-fashion-mnist where it can), loads the scorer's classifier
# (the shipped one; trained once, about 3 minutes on 2 CPU cores, where your data files differ),
# then trains for 9 minutes (--time_limit; on the GPU when there is one), plots the logs, draws
# 10,000 samples of G_ema and prints their score: the share the classifier puts in the intended
# class, and FID in its feature space, next to the real data's. Outputs, under runs/demo/
# (DEMO_ROOT to change it):
#   samples/demo/<itr>/samples0.jpg   class sheets: one row per class, T-shirt ... ankle boot
#   samples/demo/fixed_samples<itr>.jpg, <itr>/interp*.jpg, samples/demo/samples.npz
#   weights/demo/                     checkpoints (resume: add --resume to the command below)
#   logs/demo/plots/*.png             losses and singular values
# The recipe (batch 8, G/D learning rates 4e-4/8e-4, bf16 and channels-last on the CPU) was
# chosen by `python scripts/utils/demo_sweep.py`; docs/demo.md has its table.
# Extra arguments go to train.py, e.g. `bash scripts/demo.sh --seed 1`. DEMO_MINUTES (default 9)
# and DEMO_SAMPLES (default 10000) shrink it, e.g. for a quick check that it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/utils/venv.sh
bash scripts/utils/install_fmnist.sh
"$PY" scripts/utils/score_fmnist.py --floor >/dev/null  # the classifier: shipped, or trained once

ROOT=${DEMO_ROOT:-runs/demo}
start=$(date +%s)
"$PY" train.py \
    --dataset FMNIST --experiment_name demo \
    --weights_root "$ROOT/weights" --logs_root "$ROOT/logs" --samples_root "$ROOT/samples" \
    --G_ch 16 --D_ch 16 --G_attn 0 --D_attn 0 \
    --G_shared --hier --dim_z 120 --shared_dim 64 \
    --batch_size 8 --num_D_steps 1 --G_lr 4e-4 --D_lr 8e-4 \
    --ema --use_ema --ema_start 500 --ema_decay 0.999 --G_eval_mode \
    --amp bf16 --channels_last \
    --time_limit "${DEMO_MINUTES:-9}" --save_every 2000 --test_every 1000000 \
    --shuffle --num_workers 0 --sv_log_interval 20 --pbar tqdm "$@"
"$PY" logs/plot_logs.py --logs_root "$ROOT/logs" --experiment_name demo --smooth 50
"$PY" sample.py --experiment_name demo --config_from_name --weights_root "$ROOT/weights" \
    --samples_root "$ROOT/samples" --use_ema --G_eval_mode --sample_npz \
    --sample_num_npz "${DEMO_SAMPLES:-10000}" --G_batch_size 500 --pbar none >/dev/null
"$PY" scripts/utils/score_fmnist.py --npz "$ROOT/samples/demo/samples.npz" --summary
echo "Demo finished in $(( $(date +%s) - start )) s."
echo "Latest class sheet: $(ls -t "$ROOT"/samples/demo/*/samples0.jpg | head -n 1)"
echo "Plots: $ROOT/logs/demo/plots/"
