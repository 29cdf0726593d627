# Sourced by the launch and sample scripts: work from the repository root, with the project's
# Python in $PY: the one given in the environment (PY=...), else .venv's when there is one
# (scripts/test.sh and scripts/demo.sh make it), else `python`.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [ -z "${PY:-}" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python; fi
fi
