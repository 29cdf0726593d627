# Sourced by the scripts: make or reuse the virtual environment ($VENV, default .venv) and
# install requirements.txt (+ pytest) when they are not there yet. Sets $PY.
# PY=/path/to/python in the environment skips all of this and uses that Python as it is (an
# environment you manage yourself, or the tests running a script with their own interpreter).
# TORCH_INDEX_URL: install torch and torchvision from this index first, e.g. PyTorch's CPU-only
# wheels (https://download.pytorch.org/whl/cpu) on a machine without a GPU.
if [ -z "${PY:-}" ]; then
    VENV=${VENV:-.venv}
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    PY="$VENV/bin/python"
    stamp="$VENV/.requirements.sha"
    want=$( (cat requirements.txt; echo "${TORCH_INDEX_URL:-}") | sha1sum | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        if [ -n "${TORCH_INDEX_URL:-}" ]; then
            "$PY" -m pip install -q torch torchvision --index-url "$TORCH_INDEX_URL"
        fi
        "$PY" -m pip install -q -r requirements.txt pytest
        echo "$want" > "$stamp"
    fi
fi
