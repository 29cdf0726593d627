# Sourced by the scripts: make or reuse the virtual environment ($VENV, default .venv) and
# install requirements.txt (+ pytest) when they are not there yet. Sets $PY.
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
stamp="$VENV/.requirements.sha"
want=$(cat requirements.txt | sha1sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$PY" -m pip install -q -r requirements.txt pytest
    echo "$want" > "$stamp"
fi
