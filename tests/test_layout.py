"""How the code hangs together: importing the config layer loads no model code, no module imports
another that imports it back (counting imports inside functions and the choice tables that
flags.py reads by name), and nothing cites documents outside the repository."""
import ast
import glob
import os
import re
import subprocess
import sys

import flags
from conftest import ROOT

# Every project module, by import name.
MODULES = {os.path.splitext(os.path.relpath(path, ROOT))[0].replace(os.sep, '.'): path
           for pattern in ('*.py', 'sync_batchnorm/*.py', 'TFHub/*.py')
           for path in glob.glob(os.path.join(ROOT, pattern))}
MODULES = {name[:-len('.__init__')] if name.endswith('.__init__') else name: path
           for name, path in MODULES.items()}
MODEL_CODE = {'BigGAN', 'BigGANdeep', 'layers'}


def _imports(name: str, path: str) -> set:
    """The project modules `name` imports anywhere in its file (functions included), plus the
    ones it reaches by name: flags.py's From(...) choice tables, utils.model_module's
    families."""
    tree = ast.parse(open(path).read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside a package
                package = name.rsplit('.', 1)[0] if '.' in name else name
                found.add(f'{package}.{node.module}' if node.module else package)
            elif node.module:
                found.add(node.module)
                found.update(f'{node.module}.{alias.name}' for alias in node.names)
        elif (isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'From'
              and node.args and isinstance(node.args[0], ast.Constant)):
            found.add(node.args[0].value)
    if name == 'utils':
        found.update(flags.MODELS)
    return {module for module in found if module in MODULES and module != name}


def test_importing_the_config_layer_loads_no_model_code():
    code = ('import sys; sys.path.insert(0, %r); import utils; '
            'print(" ".join(sorted(sys.modules)))' % ROOT)
    loaded = set(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                                check=True).stdout.split())
    assert loaded & set(MODULES) == {'utils', 'flags'}


def test_no_import_cycles():
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    # The scan sees lazy and by-name imports too.
    assert graph['utils'] >= {'flags', 'compat', 'BigGAN', 'BigGANdeep', 'datasets'}
    assert graph['flags'] >= {'layers', 'losses', 'train_fns', 'inception_net', 'datasets'}
    state = {}  # name -> 1 while on the path, 2 when done

    def visit(name, path):
        state[name] = 1
        for child in sorted(graph[name]):
            assert state.get(child) != 1, 'import cycle: ' + ' -> '.join(path + [child])
            if child not in state:
                visit(child, path + [child])
        state[name] = 2
    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_code_tests_and_docs_cite_nothing_outside_the_repository():
    """Behaviour is stated, or the original's file, function or issue is named; never a
    section of a document the repository does not hold."""
    pattern = re.compile(r'\bspec\b', re.IGNORECASE)  # a word: not module_from_spec
    paths = [p for ext in ('py', 'md', 'sh', 'txt')
             for p in glob.glob(os.path.join(ROOT, '**', f'*.{ext}'), recursive=True)
             if '.venv' not in p and os.path.basename(p) != 'test_layout.py']
    hits = [f'{os.path.relpath(p, ROOT)}:{i}' for p in paths
            for i, line in enumerate(open(p, encoding='utf-8', errors='replace'), 1)
            if pattern.search(line)]
    assert hits == []
