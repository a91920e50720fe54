"""Under several processes a non-finite step seen by one rank is skipped by every rank (real gloo group)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "nonfinite_guard_rank.py"


def _weights_without_batch_3() -> list[list[float]]:
    """The same training in one process, with batch 3 never updating anything."""
    torch.manual_seed(0)
    net = nn.Linear(4, 1)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    for batch_idx, (xb, yb) in enumerate(DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)):
        if batch_idx == 3:
            continue
        optimizer.zero_grad()
        F.mse_loss(net(xb), yb).backward()
        optimizer.step()
    return [p.detach().flatten().tolist() for p in net.parameters()]


def test_a_nan_on_one_rank_makes_every_rank_skip_the_step(tmp_path, subprocess_env):
    init_file = tmp_path / "rendezvous"
    outs = [tmp_path / f"rank{rank}.json" for rank in range(2)]
    procs = [
        subprocess.Popen([sys.executable, str(SCRIPT), str(rank), "2", str(init_file), str(outs[rank])],
                         env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(2)
    ]
    for proc in procs:
        output, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, output[-3000:]
    results = [json.loads(out.read_text()) for out in outs]
    # rank 0's own loss was finite at batch 3, yet it skipped too
    assert [r["skipped"] for r in results] == [1, 1]
    expected = _weights_without_batch_3()
    for result in results:
        for got, want in zip(result["weights"], expected):
            assert got == want
