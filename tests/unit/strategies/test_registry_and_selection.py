"""Strategy names and objects resolve to the right strategy, with clear errors where they cannot run."""

from __future__ import annotations

import sys
from datetime import timedelta

import pytest
from torch import nn

import torchbolt as pl
from torchbolt.strategies import DataParallelStrategy, DDPStrategy, FSDPStrategy, SingleDeviceStrategy
from torchbolt.strategies.registry import available_strategies
from torchbolt.utilities.exceptions import MisconfigurationException


def _trainer(**kwargs: object) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", logger=False, max_epochs=1, **kwargs)


def test_every_documented_strategy_name_is_registered() -> None:
    from torchbolt.strategies.registry import import_strategy_modules as _import_strategy_modules

    _import_strategy_modules()
    names = set(available_strategies())
    expected = {"ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "ddp_find_unused_parameters_true",
                "ddp_spawn_find_unused_parameters_false", "fsdp", "fsdp_cpu_offload", "deepspeed",
                "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_3", "deepspeed_stage_2_offload",
                "deepspeed_stage_3_offload", "dp"}
    assert expected <= names


@pytest.mark.parametrize(("name", "start_method"), [("ddp", "popen"), ("ddp_spawn", "spawn"), ("ddp_fork", "fork"),
                                                    ("ddp_notebook", "fork")])
def test_ddp_names_select_their_launcher(name: str, start_method: str) -> None:
    trainer = _trainer(devices=2, strategy=name)
    strategy = trainer.strategy
    assert isinstance(strategy, DDPStrategy) and strategy._start_method == start_method
    assert strategy.num_processes == 2 and strategy.world_size == 2
    assert strategy.distributed_sampler_kwargs == {"num_replicas": 2, "rank": 0}


def test_auto_picks_ddp_for_several_devices_and_single_device_otherwise() -> None:
    assert isinstance(_trainer(devices=2).strategy, DDPStrategy)
    assert isinstance(_trainer(devices=1).strategy, SingleDeviceStrategy)
    assert isinstance(_trainer(devices=1, num_nodes=2).strategy, DDPStrategy)


def test_ddp_strategy_object_keeps_its_arguments() -> None:
    strategy = DDPStrategy(find_unused_parameters=True, static_graph=False, gradient_as_bucket_view=True,
                           process_group_backend="gloo", timeout=timedelta(seconds=42), start_method="spawn")
    trainer = _trainer(devices=3, strategy=strategy)
    assert trainer.strategy is strategy and strategy.world_size == 3
    assert strategy._ddp_kwargs == {"find_unused_parameters": True, "static_graph": False,
                                    "gradient_as_bucket_view": True}
    assert strategy.process_group_backend == "gloo" and strategy._timeout == timedelta(seconds=42)


def test_gloo_timeout_defaults_far_below_30_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchbolt.utilities.distributed import default_timeout

    monkeypatch.delenv("TORCHBOLT_PG_TIMEOUT", raising=False)
    assert default_timeout("gloo") == timedelta(minutes=5)
    monkeypatch.setenv("TORCHBOLT_PG_TIMEOUT", "30")
    assert default_timeout("gloo") == timedelta(seconds=30)


def test_fsdp_name_builds_fsdp2_strategy() -> None:
    strategy = _trainer(devices=2, strategy="fsdp_cpu_offload").strategy
    assert isinstance(strategy, FSDPStrategy) and strategy.cpu_offload is True


def test_deepspeed_without_the_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "deepspeed", None)
    with pytest.raises(MisconfigurationException, match="pip install deepspeed"):
        _trainer(devices=1, strategy="deepspeed_stage_2")


def test_dp_without_gpus_is_a_clear_error() -> None:
    with pytest.raises(MisconfigurationException, match="needs CUDA GPUs"):
        _trainer(devices=2, strategy="dp")


def test_dp_is_deprecated_in_favour_of_ddp() -> None:
    with pytest.warns(DeprecationWarning, match="strategy='ddp'"):
        DataParallelStrategy()


def test_ddp_in_a_notebook_points_to_ddp_notebook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "ps1", ">>> ", raising=False)
    with pytest.raises(MisconfigurationException, match="ddp_notebook"):
        _trainer(devices=2, strategy="ddp")
    assert isinstance(_trainer(devices=2, strategy="ddp_notebook").strategy, DDPStrategy)


def test_sync_batchnorm_on_cpu_is_a_clear_error() -> None:
    strategy = DDPStrategy()
    _trainer(devices=2, strategy=strategy, sync_batchnorm=True)
    model = nn.Sequential(nn.BatchNorm1d(2))
    strategy.connect(model)  # type: ignore[arg-type]
    with pytest.raises(MisconfigurationException, match="SyncBatchNorm"):
        strategy.setup(model, lambda: None)  # type: ignore[arg-type]


