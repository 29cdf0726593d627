#!/bin/bash
# BigGAN + DiffAugment on CIFAR-10 with 10 %, 20 % or all of the training images, with the
# hyper-parameters of Zhao et al. 2020 (their BigGAN runs were a fork of the original code):
# launch_cifar_ema.sh's model and optimizer (batch 50, 4 D steps, learning rates 2e-4, no
# attention, N(0, 0.02) init, EMA from 1,000) plus policy translation,cutout and mirrored reals;
# FID of 10,000 samples, every 4,000 iterations, picks the best copies.
#   FRACTION=0.1 bash scripts/launch_cifar_DiffAugment.sh     # 0.1, 0.2 or 1 (the default)
# Their FIDs (10k samples): 22.40 at 10 %, 14.04 at 20 %, 8.70 at 100 % (BigGAN alone: 39.78,
# 21.58, 9.59); docs/data_efficient.md has the table. Append --DiffAugment '' for the baseline,
# --LeCam 0.3 for LeCam (Tseng et al. 2021). Needs C10_inception_moments.npz:
#   python calculate_inception_moments.py --dataset C10 --data_root data
# The subset is class-balanced (--data_fraction, seeded by --subset_seed); theirs was drawn
# without regard to class.
FRACTION=${FRACTION:-1}
# 5,000 epochs of a part, 1,000 of the whole: 125k, 250k and 250k iterations.
EPOCHS=$([ "$FRACTION" = 1 ] && echo 1000 || echo 5000)
exec bash "$(dirname "$0")/launch_cifar_ema.sh" \
--DiffAugment translation,cutout --mirror_augment --data_fraction "$FRACTION" \
--num_epochs "$EPOCHS" --use_multiepoch_sampler --which_best FID --num_inception_images 10000 \
--test_every 4000 "$@"
