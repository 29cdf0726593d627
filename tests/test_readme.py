"""README's commands, run as written at tiny sizes.

Every ```bash block of README.md is run here, in a copy of the repository: the blocks that are
tiny already (the CPU smoke test and the tasks that use its run) word for word, and the ImageNet
and demo blocks with flags appended that shrink them (the scripts pass extra arguments on after
their own, and the last flag wins) or with the demo's DEMO_MINUTES / DEMO_SAMPLES. A block that
no test here runs fails `test_every_bash_block_is_run`, so README cannot grow an untested
command. The ```python blocks are run by tests/test_one_path.py (block, flag, loss) and by
`test_the_python_example_runs` below.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT

README = os.path.join(ROOT, 'README.md')
# The flags that shrink the ImageNet launch script to a CPU test (appended after README's).
TINY_LAUNCH = ('--G_ch 8 --D_ch 8 --batch_size 2 --num_G_accumulations 1 --num_D_accumulations 1 '
               '--no_parallel --num_workers 0 --num_iters 2 --test_every 100000 '
               '--sheet_classes 2 --no_compile --experiment_name tiny_i128')


def readme_blocks(language: str) -> dict:
    """{the `###`/`##` heading above it: [block text, ...]} for README's ```<language> blocks."""
    text = open(README).read()
    blocks, heading = {}, None
    pattern = r'(^#{2,3} [^\n]*$|```' + language + r'\n.*?```)'
    for part in re.split(pattern, text, flags=re.M | re.S):
        if re.match(r'#{2,3} ', part):
            heading = part.lstrip('#').strip()
        elif part.startswith('```' + language + '\n'):
            blocks.setdefault(heading, []).append(part[len(language) + 4:-3])
    return blocks


def commands(block: str) -> list:
    """The block's shell commands: continuation lines joined, comments dropped."""
    joined = block.replace('\\\n', ' ')
    lines = [line.split('  #')[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith('#')]


def run(command: str, cwd: str, env: dict = None) -> subprocess.CompletedProcess:
    """Run one README command in `cwd`, with this test's Python for `python` and the scripts."""
    argv = shlex.split(command)
    if argv[0] in ('python', 'python3'):
        argv[0] = sys.executable
    elif argv[0] == 'torchrun':
        argv[:1] = [sys.executable, '-m', 'torch.distributed.run']
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900,
                            env={**os.environ, 'PY': sys.executable, **(env or {})})
    assert result.returncode == 0, f'{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}'
    return result


# Which test runs each heading's bash blocks (and the Install block, which CI's own set-up runs).
RUN_BY = {
    'Install': 'test_the_install_block_is_what_ci_runs',
    'The demo: ten minutes on a laptop\'s CPU': 'test_the_demo_block_runs',
    'A CPU smoke test of the paper\'s model, without ImageNet': 'smoke (fixture)',
    'Train BigGAN on ImageNet at 128 x 128': 'test_the_imagenet_blocks_run_shrunk',
    'Resume': 'test_the_task_blocks_run',
    'Sample and interpolate': 'test_the_task_blocks_run',
    'Fine-tune on new classes': 'test_the_task_blocks_run',
    'Train without labels': 'test_the_task_blocks_run',
    'Train with little data': 'test_the_task_blocks_run',
    'Plot the logs and score samples': 'test_the_demo_block_runs',
}


def test_every_bash_block_is_run():
    assert set(readme_blocks('bash')) == set(RUN_BY), (
        'a README bash block under a heading this module does not run; add it to RUN_BY and to a '
        'test')


def test_the_install_block_is_what_ci_runs():
    """CI installs through scripts/utils/venv.sh: the same two steps as README's block."""
    (block,) = readme_blocks('bash')['Install']
    venv = open(os.path.join(ROOT, 'scripts', 'utils', 'venv.sh')).read()
    readme_steps = commands(block)
    assert readme_steps[0].startswith('python3 -m venv .venv') and 'python3 -m venv' in venv
    assert readme_steps[1] == 'pip install -r requirements.txt'
    assert '-m pip install -q -r requirements.txt' in venv


@pytest.fixture(scope='module')
def repo(tmp_path_factory):
    """A copy of the repository to run README's commands in (they write data/, weights/, ...)."""
    copy = str(tmp_path_factory.mktemp('readme') / 'repo')
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(
        '.git', '.venv', 'tests', 'runs', 'weights', 'samples', 'data', '__pycache__', '*.npz',
        'logs'))
    os.makedirs(os.path.join(copy, 'logs'))
    shutil.copy(os.path.join(ROOT, 'logs', 'plot_logs.py'), os.path.join(copy, 'logs'))
    return copy


@pytest.fixture(scope='module')
def smoke(repo):
    """README's CPU smoke test, word for word: the run the task blocks use."""
    for block in readme_blocks('bash')['A CPU smoke test of the paper\'s model, without ImageNet']:
        for command in commands(block):
            run(command, repo)
    return repo


def test_the_smoke_test_trains_the_papers_model(smoke):
    state = torch.load(os.path.join(smoke, 'weights', 'smoke', 'state_dict.pth'),
                       weights_only=True)
    config = state['config']
    assert state['itr'] == 4 and config['resolution'] == 128 and config['n_classes'] == 10
    assert config['G_attn'] == '64' and config['hier'] and config['G_shared']
    assert not config['parallel']  # --no_parallel after the script's --parallel


def _task(heading: str, cwd: str, env: dict = None) -> None:
    for block in readme_blocks('bash')[heading]:
        for command in commands(block):
            run(command, cwd, env)


@pytest.mark.slow
def test_the_task_blocks_run(smoke):
    _task('Resume', smoke)
    state = torch.load(os.path.join(smoke, 'weights', 'smoke', 'state_dict.pth'),
                       weights_only=True)
    assert state['itr'] == 6
    _task('Sample and interpolate', smoke)
    samples = os.path.join(smoke, 'samples', 'smoke')
    assert np.load(os.path.join(samples, 'samples.npz'))['x'].shape == (100, 3, 128, 128)
    assert os.path.isfile(os.path.join(samples, '-1', 'interpZY0.jpg'))
    _task('Fine-tune on new classes', smoke)
    tuned = torch.load(os.path.join(smoke, 'weights', 'smoke_ft', 'state_dict.pth'),
                       weights_only=True)
    assert tuned['config']['G_ch'] == 8 and tuned['itr'] == 2  # the source's width
    _task('Train without labels', smoke)
    assert os.path.isfile(os.path.join(smoke, 'weights', 'smoke_uncond', 'G.pth'))
    _task('Train with little data', smoke)
    little = torch.load(os.path.join(smoke, 'weights', 'smoke_little', 'state_dict.pth'),
                        weights_only=True)
    assert little['data']['n_images'] == 50 and 'LeCam' in little['data_efficient']


def test_the_python_example_runs(smoke):
    (example,) = [block for blocks in readme_blocks('python').values() for block in blocks
                  if 'from_pretrained' in block]
    result = subprocess.run([sys.executable, '-c', example], cwd=smoke, capture_output=True,
                            text=True, env={**os.environ, 'PYTHONPATH': smoke})
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.getsize(os.path.join(smoke, 'smoke_python.jpg')) > 1000


@pytest.mark.slow
def test_the_demo_block_runs(smoke):
    """The demo for 3 seconds of training and 200 samples, scored by the shipped classifier;
    then the plot and score block, on the smoke run's logs and the demo's samples."""
    (block,) = readme_blocks('bash')['The demo: ten minutes on a laptop\'s CPU']
    (command,) = commands(block)
    result = run(command, smoke, {'DEMO_MINUTES': '0.05', 'DEMO_SAMPLES': '200'})
    assert 'retraining' not in result.stderr  # the shipped classifier served
    assert 'accuracy' in result.stdout and 'Demo finished' in result.stdout
    assert os.path.isfile(os.path.join(smoke, 'runs', 'demo', 'samples', 'demo', 'samples.npz'))
    _task('Plot the logs and score samples', smoke)
    assert os.listdir(os.path.join(smoke, 'logs', 'smoke', 'plots'))


@pytest.mark.slow
def test_the_imagenet_blocks_run_shrunk(repo):
    """prepare_data.sh on a 20-image stand-in for data/ImageNet with random Inception weights,
    then the launch script, in one process and under torchrun, shrunk by appended flags."""
    from inception_testing import save_random_weights
    run('python scripts/utils/fmnist_folder.py --out data/ImageNet --per_class 2', repo)
    weights = os.path.join(repo, 'inception_random.pth')
    save_random_weights(weights)
    blocks = readme_blocks('bash')['Train BigGAN on ImageNet at 128 x 128']
    prepare, launch = commands(blocks[0])
    run(f'{prepare} --num_workers 0 --inception_weights {weights}', repo)
    assert os.path.isfile(os.path.join(repo, 'data', 'ILSVRC128.hdf5'))
    assert os.path.isfile(os.path.join(repo, 'I128_inception_moments.npz'))
    run(f'{launch} {TINY_LAUNCH}', repo)
    (torchrun,) = commands(blocks[1])
    torchrun = torchrun.replace('--nproc_per_node 8', '--nproc_per_node 2')
    run(f'{torchrun} {TINY_LAUNCH}_ddp', repo)
    for name in ('tiny_i128', 'tiny_i128_ddp'):
        state = torch.load(os.path.join(repo, 'weights', name, 'state_dict.pth'),
                           weights_only=True)
        assert state['itr'] == 2 and state['config']['amp'] == 'bf16'
