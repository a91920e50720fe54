"""Distributed paths that need CUDA: DataParallel on one GPU, SyncBatchNorm under DDP, DeepSpeed on a GPU."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distributed"))

from _launch import python, read_results_safe, run, script_env
from common import Regressor, trainer_kwargs

import torchbolt as pl

pytestmark = pytest.mark.gpu


def test_dp_on_one_gpu_matches_single_device_training() -> None:
    pl.seed_everything(7)
    reference = Regressor(batch_size=8)
    pl.Trainer(**trainer_kwargs(accelerator="gpu", devices=1)).fit(reference)
    pl.seed_everything(7)
    model = Regressor(batch_size=8)
    with pytest.warns(DeprecationWarning):
        trainer = pl.Trainer(**trainer_kwargs(accelerator="gpu", devices=1, strategy="dp"))
    trainer.fit(model)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key].cpu(), value.cpu())


def test_sync_batchnorm_converts_during_fit_and_reverts_after(tmp_path: Path) -> None:
    devices = min(2, torch.cuda.device_count())
    env = script_env(CHECK_ACCELERATOR="gpu", CHECK_DEVICES=devices)
    run(python("ddp_checks.py", tmp_path, "batchnorm"), env=env)
    results = read_results_safe(tmp_path, "batchnorm", world_size=devices)
    for result in results:
        assert result["during"] == "SyncBatchNorm" and result["after"] == "BatchNorm1d"
    assert all(r["final"] == results[0]["final"] for r in results)


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")
def test_deepspeed_stage_2_and_3_on_a_gpu(tmp_path: Path) -> None:
    run(python("deepspeed_checks.py", tmp_path), env=script_env(CHECK_ACCELERATOR="gpu"), timeout=400)
    for stage in (2, 3):
        reference = read_results_safe(tmp_path, f"uninterrupted_{stage}", world_size=1)[0]
        resumed = read_results_safe(tmp_path, f"resumed_{stage}", world_size=1)[0]
        assert resumed["weights"] == reference["weights"] and resumed["step"] == 8
