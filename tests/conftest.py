"""Shared test set-up: the repository root on sys.path, deterministic CPU torch."""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

GOLDEN_DIR = os.path.join(ROOT, 'tests', 'golden')


@pytest.fixture(autouse=True)
def _seed_torch():
    # Every test starts from the same RNG state, so failures reproduce.
    torch.manual_seed(0)
    yield
