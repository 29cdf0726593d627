#!/usr/bin/env bash
# Run the test suite: make (or reuse) the virtual environment, install what is missing, run pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k golden -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/utils/venv.sh
# The optional extras (TensorBoard, W&B, safetensors), so their tests run; where they cannot be
# installed those tests skip.
extras_stamp="${VENV:-.venv}/.extras.sha"
extras=$(sha1sum requirements-extra.txt | cut -d' ' -f1)
if [ "$(cat "$extras_stamp" 2>/dev/null)" != "$extras" ]; then
    "$PY" -m pip install -q -r requirements-extra.txt && echo "$extras" > "$extras_stamp" || true
fi
# Fashion-MNIST (the offline default dataset); its tests skip with the install hint where it is absent.
bash scripts/utils/install_fmnist.sh || true
exec "$PY" -m pytest -q "$@"
