#!/bin/bash
# BigGAN + DiffAugment + LeCam at 128 x 128 on a class-balanced part of ImageNet (default 10 %):
# the paper's model (scripts/launch_BigGAN_bs256x8.sh: ch 96, batch 256 x 8 = 2048, EMA) with
# the published limited-data settings: DiffAugment's ImageNet policy (translation), LeCam
# weight 0.3 with averages of decay 0.99, 2 D steps and learning rates 1e-4 / 2e-4 (as
# DiffAugment's and LeCam's ImageNet runs, which used compare_gan on TPUs).
#   FRACTION=0.1 bash scripts/launch_BigGAN_I128_DiffAugment_LeCam.sh   # or 0.25, 0.5, 1
# Their FIDs: at 10 %, BigGAN 42.99, + LeCam 27.51, + LeCam + DiffAugment 24.38 (Tseng et al.
# 2021); at 25 %, BigGAN 25.37, + DiffAugment 13.28 (Zhao et al. 2020). docs/data_efficient.md
# has the table. Needs data/ILSVRC128.hdf5 and I128_inception_moments.npz
# (scripts/utils/prepare_data.sh).
FRACTION=${FRACTION:-0.1}
exec bash "$(dirname "$0")/launch_BigGAN_bs256x8.sh" \
--data_fraction "$FRACTION" --DiffAugment translation --LeCam 0.3 --LeCam_decay 0.99 \
--num_D_steps 2 --G_lr 1e-4 --D_lr 2e-4 --which_best FID "$@"
