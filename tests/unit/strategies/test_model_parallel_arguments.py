"""ModelParallelStrategy without processes: argument checks, the mesh shape and data split it derives from
the Trainer's devices, and its checkpoint and setup errors. (Training on real process groups is in
tests/distributed/test_model_parallel.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import torchbolt as pl
from torchbolt.strategies import ModelParallelStrategy
from torchbolt.strategies.model_parallel import _keyed_by_name, _materialize_meta_tensors, _synchronizes_gradients
from torchbolt.strategies.registry import available_strategies, import_strategy_modules
from torchbolt.utilities.exceptions import MisconfigurationException


def _trainer(**kwargs: object) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", logger=False, max_epochs=1, **kwargs)


@pytest.mark.parametrize("argument", ["data_parallel_size", "tensor_parallel_size"])
@pytest.mark.parametrize("value", [0, -2, 1.5, True, "two"])
def test_sizes_must_be_positive_ints_or_auto(argument: str, value: object) -> None:
    with pytest.raises(MisconfigurationException, match=f"{argument}="):
        ModelParallelStrategy(**{argument: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(("dp", "tp", "devices"), [(2, 2, 2), (1, 1, 2), (3, 1, 2)])
def test_sizes_that_do_not_multiply_to_the_world_size_fail_when_the_trainer_is_built(dp: int, tp: int,
                                                                                     devices: int) -> None:
    with pytest.raises(MisconfigurationException, match=r"multiplied should equal the world size \(2"):
        _trainer(devices=devices, strategy=ModelParallelStrategy(data_parallel_size=dp, tensor_parallel_size=tp))


def test_auto_sizes_put_the_devices_of_a_node_on_the_tensor_parallel_dimension() -> None:
    import_strategy_modules()
    assert "model_parallel" in available_strategies()
    strategy = _trainer(devices=2, strategy="model_parallel").strategy
    assert isinstance(strategy, ModelParallelStrategy) and strategy.world_size == 2
    assert (strategy.data_parallel_size, strategy.tensor_parallel_size) == (1, 2)
    # both ranks form one tensor-parallel group: they get the same data
    assert strategy.distributed_sampler_kwargs == {"num_replicas": 1, "rank": 0}
    assert strategy.save_distributed_checkpoint


def test_data_parallel_mesh_splits_the_data_over_the_ranks() -> None:
    strategy = _trainer(devices=2, strategy=ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
                        ).strategy
    assert strategy.distributed_sampler_kwargs == {"num_replicas": 2, "rank": 0}


def test_device_mesh_exists_only_once_a_run_has_started() -> None:
    with pytest.raises(RuntimeError, match="Accessing the device mesh before processes have initialized"):
        _ = ModelParallelStrategy().device_mesh
    assert pl.LightningModule().device_mesh is None


def test_setup_refuses_a_module_without_configure_model() -> None:
    strategy = ModelParallelStrategy()
    with pytest.raises(TypeError, match=r"required to override the `configure_model\(\)` hook"):
        strategy.setup(pl.LightningModule(), None)


def test_distributed_checkpoints_take_no_storage_options(tmp_path: Path) -> None:
    strategy = ModelParallelStrategy()
    with pytest.raises(TypeError, match=r"save_checkpoint\(\.\.\., storage_options=\.\.\.\)` is not supported"):
        strategy.save_checkpoint({"state_dict": {}}, tmp_path / "x.ckpt", storage_options={"a": 1})


def test_a_full_checkpoint_never_replaces_a_foreign_directory(tmp_path: Path) -> None:
    target = tmp_path / "results"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    strategy = ModelParallelStrategy(save_distributed_checkpoint=False)
    with pytest.raises(IsADirectoryError, match="left untouched"):
        strategy.save_checkpoint({"state_dict": {}}, target)
    assert (target / "notes.txt").read_text() == "keep me"


def test_loading_a_directory_that_is_not_a_sharded_checkpoint_fails(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not point to a valid checkpoint"):
        ModelParallelStrategy().load_checkpoint(tmp_path)


def test_single_device_optimizer_state_is_rekeyed_by_parameter_name() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    optimizer = torch.optim.Adam([{"params": [model[2].weight]}, {"params": [model[0].weight, model[0].bias]}])
    model(torch.randn(4, 2)).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()  # keyed 0, 1, 2 in parameter-group order
    named = _keyed_by_name(model, optimizer, state)
    assert [g["params"] for g in named["param_groups"]] == [["2.weight"], ["0.weight", "0.bias"]]
    assert torch.equal(named["state"]["2.weight"]["exp_avg"], state["state"][0]["exp_avg"])
    assert _keyed_by_name(model, optimizer, named) is named  # already by name: unchanged


def test_meta_device_tensors_are_allocated_and_reset() -> None:
    class NoReset(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(2))

    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(3, 3), NoReset())
    with pytest.warns(UserWarning, match="no `reset_parameters\\(\\)` method for re-initialization: NoReset"):
        _materialize_meta_tensors(model, torch.device("cpu"))
    assert not any(p.is_meta for p in model.parameters())
    assert model[0].weight.abs().sum() > 0  # initialized by Linear.reset_parameters


def test_norm_clipping_of_plain_gradients_is_torchs() -> None:
    from torchbolt.utilities.grads import clip_grad_norm

    torch.manual_seed(0)
    ours, theirs = nn.Linear(3, 2), nn.Linear(3, 2)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(5, 3)
    for model in (ours, theirs):
        (model(x) ** 2).sum().backward()
    total = clip_grad_norm(ours.parameters(), max_norm=0.1)
    expected = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm=0.1)
    assert torch.equal(total, expected) and total > 0.1
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a.grad, b.grad)


def test_a_module_without_fully_shard_does_not_synchronize_gradients() -> None:
    # (the warning this leads to, and its absence after `fully_shard`: tests/distributed/test_model_parallel.py)
    assert not _synchronizes_gradients(nn.Sequential(nn.Linear(2, 2)))
