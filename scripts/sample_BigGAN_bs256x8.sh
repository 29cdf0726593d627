#!/bin/bash
# Sample the launch_BigGAN_bs256x8.sh model: npz, sheets, interpolations, IS/FID and a
# truncation sweep. The training flags are repeated so the experiment name matches.
# Use --z_var to change z's scale; --mybn --accumulate_stats --num_standing_accumulations 32
# for standing statistics.
source "$(dirname "$0")/utils/python.sh"  # $PY, from the repository root
exec "$PY" sample.py \
--dataset I128_hdf5 --parallel --shuffle  --num_workers 8 --batch_size 256 \
--num_G_accumulations 8 --num_D_accumulations 8 \
--num_D_steps 1 --G_lr 1e-4 --D_lr 4e-4 --D_B2 0.999 --G_B2 0.999 \
--G_attn 64 --D_attn 64 \
--G_ch 96 --D_ch 96 \
--G_nl inplace_relu --D_nl inplace_relu \
--SN_eps 1e-6 --BN_eps 1e-5 --adam_eps 1e-6 \
--G_ortho 0.0 \
--G_shared \
--G_init ortho --D_init ortho --skip_init \
--hier --dim_z 120 --shared_dim 128 \
--ema --ema_start 20000 \
--use_multiepoch_sampler \
--test_every 2000 --save_every 1000 --num_best_copies 5 --num_save_copies 2 --seed 0 \
--skip_init --G_batch_size 512 --use_ema --G_eval_mode --sample_trunc_curves 0.05_0.05_1.0 \
--sample_inception_metrics --sample_npz  --sample_random --sample_sheets --sample_interps "$@"
