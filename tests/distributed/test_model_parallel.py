"""ModelParallelStrategy with real 2-process gloo groups on CPU: tensor parallelism (mesh 1x2) and FSDP2
(mesh 2x1) train like one process on the same data, sharded and full checkpoints resume exactly (also on
the other mesh), and the consolidated sharded checkpoint loads and resumes in a plain single process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _launch import python, read_results_safe, run, script_env
from common import trainer_kwargs

import torchbolt as pl


@pytest.fixture(scope="module")
def mp_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model_parallel")
    run(python("model_parallel_checks.py", out, "tp"), env=script_env(), timeout=240)
    return out


@pytest.fixture(scope="module")
def dp_out(mp_out: Path) -> Path:
    run(python("model_parallel_checks.py", mp_out, "dp"), env=script_env(), timeout=240)
    return mp_out


@pytest.fixture(scope="module")
def reference() -> dict:
    """One process, the whole global batch of 8 per batch, 2 epochs of 4 batches (2 optimizer steps each)."""
    from model_parallel_checks import FIT_OPTIONS, Block

    pl.seed_everything(7)
    model = Block(batch_size=8)
    pl.Trainer(**trainer_kwargs(devices=1, max_epochs=2, **FIT_OPTIONS)).fit(model)
    return {"losses": model.losses, "weights": {k: v.clone() for k, v in model.state_dict().items()}}


def _assert_weights(actual: dict, expected: dict, exact: bool = False) -> None:
    assert set(actual) == set(expected)
    for key, value in expected.items():
        a, e = torch.tensor(actual[key]), torch.as_tensor(value)
        if exact:
            assert torch.equal(a, e), key
        else:
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)


def test_tensor_parallel_training_equals_one_process(mp_out: Path, reference: dict) -> None:
    rank0, rank1 = read_results_safe(mp_out, "tp_uninterrupted")
    assert rank0["mesh"] == [1, 2] and rank0["mesh_names"] == ["data_parallel", "tensor_parallel"]
    assert rank0["module_mesh_is_strategy_mesh"]
    # both tensor-parallel ranks see the whole batch; the loss is the full model's on every rank
    assert rank0["seen"] == rank1["seen"] and rank0["seen"][0] == list(range(8))
    torch.testing.assert_close(rank0["losses"], reference["losses"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rank1["losses"], reference["losses"], rtol=1e-5, atol=1e-6)
    _assert_weights(rank0["weights"], reference["weights"])


def test_fsdp2_data_parallel_training_equals_one_process_on_the_global_batch(dp_out: Path,
                                                                           reference: dict) -> None:
    rank0, rank1 = read_results_safe(dp_out, "dp_uninterrupted")
    assert rank0["mesh"] == [2, 1]
    # the data is split over the data-parallel ranks: together they see the one-process batch
    assert rank0["seen"][0] == [0, 2, 4, 6] and rank1["seen"][0] == [1, 3, 5, 7]
    global_losses = [(a + b) / 2 for a, b in zip(rank0["losses"], rank1["losses"])]
    torch.testing.assert_close(global_losses, reference["losses"], rtol=1e-5, atol=1e-6)
    _assert_weights(rank0["weights"], reference["weights"])
    assert rank1["weights"] == {}  # full state dicts are gathered on rank 0 only
    assert not [m for m in rank0["warnings"] if "applied neither" in m]


def test_data_parallel_without_fully_shard_is_pointed_out(dp_out: Path) -> None:
    rank0 = read_results_safe(dp_out, "not_sharded")[0]
    (message,) = [m for m in rank0["warnings"] if "applied neither" in m]
    assert "data_parallel_size=2" in message and "NotSharded" in message and "fully_shard(" in message


@pytest.mark.parametrize(("mode", "kind"), [("tp", "sharded"), ("tp", "full"), ("dp", "sharded")])
def test_resume_continues_exactly(dp_out: Path, mode: str, kind: str) -> None:
    uninterrupted = read_results_safe(dp_out, f"{mode}_uninterrupted")[0]
    resumed = read_results_safe(dp_out, f"{mode}_resumed_{kind}")[0]
    assert resumed["step"] == 4
    assert resumed["losses"] == uninterrupted["losses"][4:]  # the second epoch, bit for bit
    _assert_weights(resumed["weights"], uninterrupted["weights"], exact=True)
    _assert_weights(resumed["exp_avg"], uninterrupted["exp_avg"], exact=True)


def test_tensor_parallel_checkpoint_resumes_on_the_data_parallel_mesh(dp_out: Path, reference: dict) -> None:
    rank0, rank1 = read_results_safe(dp_out, "dp_resumed_from_tp")
    assert rank0["step"] == 4
    global_losses = [(a + b) / 2 for a, b in zip(rank0["losses"], rank1["losses"])]
    torch.testing.assert_close(global_losses, reference["losses"][4:], rtol=1e-5, atol=1e-6)
    _assert_weights(rank0["weights"], reference["weights"])


def test_checkpoint_layouts(mp_out: Path) -> None:
    sharded = mp_out / "tp_sharded.ckpt"
    assert sharded.is_dir()
    assert sorted(p.name for p in sharded.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    meta = torch.load(sharded / "meta.pt", weights_only=False)
    assert meta["global_step"] == 2 and "state_dict" not in meta
    full = torch.load(mp_out / "tp_full.ckpt", weights_only=False)
    shapes = {k: tuple(v.shape) for k, v in full["state_dict"].items()}
    assert shapes == {"up.weight": (16, 4), "up.bias": (16,), "down.weight": (4, 16), "down.bias": (4,),
                      "head.weight": (2, 4), "head.bias": (2,)}  # whole tensors, not one rank's columns
    assert full["optimizer_states"][0]["state"]["up.weight"]["exp_avg"].shape == (16, 4)


def test_consolidated_checkpoint_loads_and_resumes_in_one_process(mp_out: Path) -> None:
    from model_parallel_checks import FIT_OPTIONS, Block

    sharded = mp_out / "tp_sharded.ckpt"
    output = mp_out / "consolidated" / "tp.ckpt"
    proc = subprocess.run([sys.executable, "-m", "torchbolt.utilities.consolidate_checkpoint", str(sharded),
                           "--output_file", str(output)], env=script_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    saved = read_results_safe(mp_out, "tp_after_one_epoch_sharded")[0]

    model = Block.load_from_checkpoint(output)
    _assert_weights({k: v.tolist() for k, v in model.state_dict().items()}, saved["weights"], exact=True)

    # an ordinary single-device run resumes the second epoch from it, exactly as the 2-rank run did
    pl.seed_everything(7)
    model = Block(batch_size=8)
    trainer = pl.Trainer(**trainer_kwargs(devices=1, max_epochs=2, **FIT_OPTIONS))
    with pytest.warns(UserWarning, match="written by 2 process"):
        trainer.fit(model, ckpt_path=str(output))
    uninterrupted = read_results_safe(mp_out, "tp_uninterrupted")[0]
    assert trainer.global_step == 4
    torch.testing.assert_close(model.losses, uninterrupted["losses"][4:], rtol=1e-6, atol=1e-7)
    _assert_weights({k: v.tolist() for k, v in model.state_dict().items()}, uninterrupted["weights"])


def test_a_model_created_on_the_meta_device_is_the_same_model_on_every_rank(mp_out: Path) -> None:
    rank0, rank1 = read_results_safe(mp_out, "meta_init")
    assert not rank0["meta"] and not rank1["meta"]
    # each rank started from its own random state: the layers tensor parallelism does not split (the head,
    # the replicated bias of the row-wise layer) were made equal across the ranks when the run set up
    assert rank0["weights"] == rank1["weights"]
    assert rank0["losses"] == rank1["losses"]


def test_a_module_without_configure_model_is_refused_on_every_rank(mp_out: Path) -> None:
    for result in read_results_safe(mp_out, "no_configure_model"):
        assert "you are required to override the `configure_model()` hook" in result["error"]
        assert "NoConfigureModel" in result["error"]
