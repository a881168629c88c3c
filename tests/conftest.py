import os
from pathlib import Path

import pytest
import torch

from _browser import FLAGS, chromium
from _kit import Kit
from _tiny import Tiny

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One intra-op thread per xdist worker: N workers x N OpenMP threads on N cores spin
    # against each other and run many times slower than N single-threaded workers.
    torch.set_num_threads(1)
    # and the commands the tests run choose 1 as their default --threads (and subprocesses)
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    """Tiny random ``transformers`` models saved to ``tmp_path`` (see ``_kit.Kit``)."""
    return Kit(tmp_path)


@pytest.fixture(scope="session")
def tiny() -> type[Tiny]:
    """Builders of tiny, dropout-free qkv models of every family (see ``_tiny.Tiny``)."""
    return Tiny


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (playwright), or a skip when either is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is not installed (pip install playwright)")
    exe = chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=FLAGS)
        yield b
        b.close()
