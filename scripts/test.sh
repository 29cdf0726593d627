#!/usr/bin/env bash
# Run the test suite: make (or reuse) the virtual environment, install what is missing, run pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k golden -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/utils/venv.sh
# Fashion-MNIST (the offline default dataset); its tests skip with the install hint where it is absent.
bash scripts/utils/install_fmnist.sh || true
exec "$PY" -m pytest -q "$@"
