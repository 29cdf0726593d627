#!/usr/bin/env bash
# ImageNet at 128 x 128: the image folder data/ImageNet/<class>/*.JPEG to data/ILSVRC128.hdf5,
# then the Inception moments of that file (needed for FID during training). Extra arguments go
# to both programs, e.g. `bash scripts/utils/prepare_data.sh --data_root /datasets`.
set -euo pipefail
source "$(dirname "$0")/python.sh"  # $PY, from the repository root
"$PY" make_hdf5.py --dataset I128 --batch_size 256 --data_root data "$@"
"$PY" calculate_inception_moments.py --dataset I128_hdf5 --data_root data "$@"
