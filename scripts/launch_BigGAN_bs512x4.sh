#!/bin/bash
# BigGAN at 128x128 on ImageNet (the paper's model, ch 96): batch 512 x 4 accumulations = 2048.
# Needs data/ILSVRC128.hdf5 and I128_inception_moments.npz (scripts/utils/prepare_data.sh).
# On several GPUs prefer torchrun (see docs/performance.md); --parallel uses every GPU
# visible to this one process.
source "$(dirname "$0")/utils/python.sh"  # $PY, from the repository root
exec "$PY" train.py \
--dataset I128_hdf5 --parallel --shuffle  --num_workers 8 --batch_size 512 --load_in_mem  \
--num_G_accumulations 4 --num_D_accumulations 4 \
--num_D_steps 1 --G_lr 1e-4 --D_lr 4e-4 --D_B2 0.999 --G_B2 0.999 \
--G_attn 64 --D_attn 64 \
--G_nl inplace_relu --D_nl inplace_relu \
--SN_eps 1e-6 --BN_eps 1e-5 --adam_eps 1e-6 \
--G_ortho 0.0 \
--G_shared \
--G_init ortho --D_init ortho \
--hier --dim_z 120 --shared_dim 128 \
--G_eval_mode \
--G_ch 96 --D_ch 96 \
--ema --use_ema --ema_start 20000 \
--test_every 2000 --save_every 1000 --num_best_copies 5 --num_save_copies 2 --seed 0 \
--use_multiepoch_sampler "$@"
