#!/usr/bin/env bash
# Install Fashion-MNIST (Debian package dataset-fashion-mnist) where we can: root and apt-get.
# Files land in /usr/share/datasets/fashion-mnist/. Elsewhere, pass --data_root to a folder
# holding the four .gz files.
set -u
dir=/usr/share/datasets/fashion-mnist
[ -f "$dir/train-images-idx3-ubyte.gz" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }
fi
if [ -f "$dir/train-images-idx3-ubyte.gz" ]; then
    echo "Installed Fashion-MNIST into $dir"
else
    echo "Fashion-MNIST is not installed: run 'apt-get install dataset-fashion-mnist' as root," \
         "or pass --data_root to a folder holding the four .gz files." >&2
    exit 1
fi
