#!/usr/bin/env bash
# ImageNet at 128 x 128: the image folder data/ImageNet/<class>/*.JPEG to data/ILSVRC128.hdf5,
# then the Inception moments of that file (needed for FID during training). Each extra argument
# goes to the program(s) that accept it (scripts/utils/route_args.py reads their flags):
# --data_root, --batch_size, --num_workers, --resolution to both, --chunk_size / --compression /
# --out to make_hdf5.py, --inception / --inception_weights / --moments_path ... to
# calculate_inception_moments.py; a flag neither knows stops the script before it starts, e.g.
#   bash scripts/utils/prepare_data.sh --data_root /datasets --inception_weights pt_inception.pth
set -euo pipefail
source "$(dirname "$0")/python.sh"  # $PY, from the repository root
routes="$("$PY" scripts/utils/route_args.py make_hdf5.py calculate_inception_moments.py -- "$@")"
eval "$routes"  # ARGS_0 (make_hdf5.py) and ARGS_1 (calculate_inception_moments.py), quoted
"$PY" make_hdf5.py --dataset I128 --batch_size 256 --data_root data "${ARGS_0[@]}"
"$PY" calculate_inception_moments.py --dataset I128_hdf5 --data_root data "${ARGS_1[@]}"
