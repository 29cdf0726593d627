#!/bin/bash
# BigGAN + DiffAugment on CIFAR-10 with 10 %, 20 % or all of the training images, with the
# hyper-parameters of Zhao et al. 2020 (their BigGAN runs were a fork of the original code):
# policy translation,cutout, mirrored reals, batch 50, 4 D steps, learning rates 2e-4, no
# attention, N(0, 0.02) init, EMA from 1,000; FID of 10,000 samples picks the best copies.
#   FRACTION=0.1 bash scripts/launch_cifar_DiffAugment.sh     # 0.1, 0.2 or 1 (the default)
# Their FIDs (10k samples): 22.40 at 10 %, 14.04 at 20 %, 8.70 at 100 % (BigGAN alone: 39.78,
# 21.58, 9.59); docs/data_efficient.md has the table. Append --DiffAugment '' for the baseline,
# --LeCam 0.3 for LeCam (Tseng et al. 2021). Needs C10_inception_moments.npz:
#   python calculate_inception_moments.py --dataset C10 --data_root data
# The subset is class-balanced (--data_fraction, seeded by --subset_seed); theirs was drawn
# without regard to class.
source "$(dirname "$0")/utils/python.sh"  # $PY, from the repository root
FRACTION=${FRACTION:-1}
# 5,000 epochs of a part, 1,000 of the whole: 125k, 250k and 250k iterations.
EPOCHS=$([ "$FRACTION" = 1 ] && echo 1000 || echo 5000)
exec "$PY" train.py \
--DiffAugment translation,cutout --mirror_augment --data_fraction "$FRACTION" \
--use_multiepoch_sampler --which_best FID --num_inception_images 10000 \
--shuffle --batch_size 50 --parallel \
--num_G_accumulations 1 --num_D_accumulations 1 --num_epochs "$EPOCHS" \
--num_D_steps 4 --G_lr 2e-4 --D_lr 2e-4 \
--dataset C10 \
--G_ortho 0.0 \
--G_attn 0 --D_attn 0 \
--G_init N02 --D_init N02 \
--ema --use_ema --ema_start 1000 \
--test_every 4000 --save_every 2000 --num_best_copies 5 --num_save_copies 2 --seed 0 "$@"
