"""Shared fixtures: every test runs in its own temporary directory with fresh global state."""

from __future__ import annotations

import os

# One intra-op thread per process: the suite runs on 2 cores and many tests start several processes;
# oversubscribed threads made it ~3x slower. Set before torch is imported (child processes inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run in ``tmp_path``, with seeds reset and torch's global flags restored afterwards."""
    monkeypatch.chdir(tmp_path)
    for key in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        monkeypatch.delenv(key, raising=False)
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    yield
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.backends.cudnn.benchmark = benchmark
    from torchbolt.utilities.rank_zero import rank_zero_only

    rank_zero_only.rank = 0


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for child Python processes that import this checkout's torchbolt."""
    env = dict(os.environ)
    src = str(REPO_ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU tests skip cleanly, with the reason, where CUDA is not available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


PYTHON = sys.executable
