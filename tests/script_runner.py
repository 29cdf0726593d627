"""Run one of scripts/*.sh with a stand-in Python that records its command line instead of
training: what the script really passes, its extra arguments ("$@") included."""
import json
import os
import subprocess
import sys
import tempfile

from conftest import ROOT

FAKE_PYTHON = '''#!{python}
import json, os, sys
with open(os.environ['RECORD_ARGV'], 'w') as f:
    json.dump(sys.argv[1:], f)
'''


def script_argv(name: str, *extra: str) -> list:
    """[program, flags...] that `bash scripts/<name> <extra>` runs."""
    with tempfile.TemporaryDirectory() as tmp:
        fake = os.path.join(tmp, 'python')
        with open(fake, 'w') as f:
            f.write(FAKE_PYTHON.format(python=sys.executable))
        os.chmod(fake, 0o755)
        record = os.path.join(tmp, 'argv.json')
        subprocess.run(['bash', os.path.join(ROOT, 'scripts', name), *extra], check=True,
                       env={**os.environ, 'PY': fake, 'RECORD_ARGV': record}, cwd=tmp)
        with open(record) as f:
            return json.load(f)
