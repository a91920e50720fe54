"""FSDP2 with real gloo process groups on CPU: training matches one process, full and sharded checkpoints
resume exactly, and a 2-rank sharded checkpoint loads into 1 rank."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _launch import python, read_results_safe, run, script_env
from common import trainer_kwargs
from torch import nn

import torchbolt as pl


@pytest.fixture(scope="module")
def fsdp_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fsdp")
    run(python("fsdp_checks.py", out, "two_ranks"), env=script_env(), timeout=280)
    return out


def _close(actual: dict, expected: dict, exact: bool = False) -> None:
    assert set(actual) == set(expected)
    for key in expected:
        a, e = torch.tensor(actual[key]), torch.tensor(expected[key])
        if exact:
            assert torch.equal(a, e), key
        else:
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)


def test_fsdp_fit_equals_a_single_process_fit_on_the_doubled_batch(fsdp_out: Path) -> None:
    from fsdp_checks import Net

    pl.seed_everything(5)
    model = Net()
    model.batch_size = 8
    pl.Trainer(**trainer_kwargs(devices=1, max_epochs=2)).fit(model)
    expected = {k: v.tolist() for k, v in model.state_dict().items()}
    rank0, rank1 = read_results_safe(fsdp_out, "uninterrupted")
    _close(rank0["weights"], expected)
    assert rank1["weights"] == {}  # the full state dict is gathered on rank 0 only


@pytest.mark.parametrize("kind", ["full", "sharded"])
def test_fsdp_resume_from_checkpoint_matches_the_uninterrupted_run(fsdp_out: Path, kind: str) -> None:
    reference = read_results_safe(fsdp_out, "uninterrupted")[0]
    resumed = read_results_safe(fsdp_out, f"resumed_{kind}")[0]
    assert resumed["step"] == 8
    _close(resumed["weights"], reference["weights"], exact=True)
    _close(resumed["exp_avg"], reference["exp_avg"], exact=True)


def test_fsdp_full_checkpoint_is_one_plain_file(fsdp_out: Path) -> None:
    checkpoint = torch.load(fsdp_out / "full.ckpt", weights_only=True)
    assert set(checkpoint["state_dict"]) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}
    plain = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    plain.load_state_dict({k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items()})


def test_fsdp_sharded_checkpoint_is_a_directory_with_one_shard_per_rank(fsdp_out: Path) -> None:
    directory = fsdp_out / "sharded.ckpt"
    assert directory.is_dir()
    assert sorted(p.name for p in directory.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert (directory / "meta.pt").is_file() and (directory / ".metadata").is_file()
    meta = torch.load(directory / "meta.pt", weights_only=True)
    assert meta["global_step"] == 4 and "state_dict" not in meta


def test_two_rank_sharded_checkpoint_loads_into_one_rank(fsdp_out: Path) -> None:
    run(python("fsdp_checks.py", fsdp_out, "one_rank"), env=script_env(), timeout=200)
    (loaded,) = read_results_safe(fsdp_out, "one_rank", world_size=1)
    saved = read_results_safe(fsdp_out, "after_one_epoch_sharded")[0]
    assert loaded["world_size"] == 1 and loaded["step"] == 4
    _close(loaded["weights"], saved["weights"], exact=True)
    _close(loaded["exp_avg"], saved["exp_avg"], exact=True)


def test_fsdp_policies_are_validated() -> None:
    from torchbolt.strategies import FSDPStrategy
    from torchbolt.utilities.exceptions import MisconfigurationException

    with pytest.raises(MisconfigurationException, match="state_dict_type"):
        FSDPStrategy(state_dict_type="local")  # type: ignore[arg-type]
    with pytest.raises(MisconfigurationException, match=r"nn\.Module"):
        FSDPStrategy(auto_wrap_policy={"Linear"})  # type: ignore[arg-type]
    with pytest.raises(MisconfigurationException, match="SHARD_GRAD_OP"):
        FSDPStrategy(sharding_strategy="HYBRID_SHARD")  # type: ignore[arg-type]


def test_size_based_wrap_policy_selects_large_submodules() -> None:
    from torchbolt.strategies.fsdp import _as_predicate

    predicate = _as_predicate(100, "auto_wrap_policy")
    assert predicate is not None
    assert predicate(nn.Linear(10, 10), 110) and not predicate(nn.Linear(2, 2), 6)
    by_class = _as_predicate({nn.Linear}, "auto_wrap_policy")
    assert by_class is not None and by_class(nn.Linear(1, 1), 0) and not by_class(nn.ReLU(), 0)
