"""DeepSpeed ZeRO-2/3 with world size 1: training matches a plain fit, checkpoints resume exactly and convert
to one fp32 file. DeepSpeed runs on the CPU here (its CPU accelerator); the same script runs on a GPU with
CHECK_ACCELERATOR=gpu."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from _launch import python, read_results_safe, run, script_env
from common import Regressor, trainer_kwargs

import torchbolt as pl

pytestmark = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                reason="deepspeed is not installed (pip install torchbolt[deepspeed])")


@pytest.fixture(scope="module")
def ds_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deepspeed")
    run(python("deepspeed_checks.py", out), env=script_env(), timeout=280)
    return out


def _close(actual: dict, expected: dict, exact: bool = False) -> None:
    assert set(actual) == set(expected)
    for key in expected:
        a, e = torch.tensor(actual[key]), torch.as_tensor(expected[key])
        if exact:
            assert torch.equal(a, e), key
        else:
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_fit_matches_a_plain_fit_with_accumulation(ds_out: Path, stage: int) -> None:
    pl.seed_everything(11)
    model = Regressor(batch_size=4)
    pl.Trainer(**trainer_kwargs(devices=1, max_epochs=2, accumulate_grad_batches=2)).fit(model)
    result = read_results_safe(ds_out, f"uninterrupted_{stage}", world_size=1)[0]
    assert result["step"] == 8
    _close(result["weights"], model.state_dict())


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_resume_matches_the_uninterrupted_run(ds_out: Path, stage: int) -> None:
    reference = read_results_safe(ds_out, f"uninterrupted_{stage}", world_size=1)[0]
    resumed = read_results_safe(ds_out, f"resumed_{stage}", world_size=1)[0]
    assert resumed["step"] == 8
    _close(resumed["weights"], reference["weights"], exact=True)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_checkpoint_converts_to_one_fp32_file(ds_out: Path, stage: int) -> None:
    result = read_results_safe(ds_out, f"one_epoch_{stage}", world_size=1)[0]
    _close(result["converted"], result["weights"], exact=True)
    checkpoint = torch.load(ds_out / f"stage{stage}.fp32.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4
    model = Regressor()
    model.load_state_dict(checkpoint["state_dict"])


@pytest.fixture(scope="module")
def zero_ddp_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deepspeed_ddp")
    run(python("deepspeed_ddp_checks.py", out), env=script_env(), timeout=400)
    return out


@pytest.mark.parametrize("stage", [1, 2])
def test_zero_on_two_cpu_processes_trains_like_ddp(zero_ddp_out: Path, stage: int) -> None:
    ddp = read_results_safe(zero_ddp_out, "ddp")
    zero = read_results_safe(zero_ddp_out, f"zero{stage}")
    for rank in (0, 1):
        assert zero[rank]["world_size"] == 2
        assert zero[rank]["step"] == ddp[rank]["step"] == 4
        # the same gradients, averaged over the same two shards: the weights DDP reaches
        _close(zero[rank]["weights"], ddp[rank]["weights"])
    # each rank holds only its half of the optimizer state (10 parameters, padded to 12, split in two)
    assert [r["partition_numel"] for r in zero] == [6, 6]
