#!/usr/bin/env bash
# The main job: train a small BigGAN on Fashion-MNIST (32 x 32, 10 classes), offline.
#
# Makes or reuses the virtual environment (.venv), installs what is missing (requirements;
# Fashion-MNIST from Debian's dataset-fashion-mnist where it can), trains on the GPU when there
# is one (else the CPU: at most 11 minutes, --time_limit), then plots the logs. Outputs, under
# runs/demo/ (DEMO_ROOT to change it):
#   samples/demo/<itr>/samples0.jpg   class sheets: one row per class, T-shirt ... ankle boot
#   samples/demo/fixed_samples<itr>.jpg, <itr>/interp*.jpg
#   weights/demo/                     checkpoints (resume: add --resume to the command below)
#   logs/demo/plots/*.png             losses and singular values
# Extra arguments go to train.py, e.g. `bash scripts/demo.sh --num_iters 4000`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/utils/venv.sh
bash scripts/utils/install_fmnist.sh

ROOT=${DEMO_ROOT:-runs/demo}
start=$(date +%s)
"$PY" train.py \
    --dataset FMNIST --experiment_name demo \
    --weights_root "$ROOT/weights" --logs_root "$ROOT/logs" --samples_root "$ROOT/samples" \
    --G_ch 16 --D_ch 16 --G_attn 0 --D_attn 0 \
    --G_shared --hier --dim_z 120 --shared_dim 64 \
    --batch_size 16 --num_D_steps 1 --G_lr 2e-4 --D_lr 2e-4 \
    --ema --use_ema --ema_start 500 --ema_decay 0.999 --G_eval_mode \
    --num_iters 2500 --time_limit 11 --save_every 500 --test_every 1000000 \
    --shuffle --num_workers 0 --sv_log_interval 20 --pbar tqdm "$@"
"$PY" logs/plot_logs.py --logs_root "$ROOT/logs" --experiment_name demo --smooth 50
echo "Demo finished in $(( $(date +%s) - start )) s. Latest class sheet:"
ls -t "$ROOT"/samples/demo/*/samples0.jpg | head -n 1
