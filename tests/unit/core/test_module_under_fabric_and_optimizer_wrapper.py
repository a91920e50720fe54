"""A LightningModule driven by a Fabric object (not a Trainer), and LightningOptimizer's live view."""

from __future__ import annotations

import copy
import gc
import pickle
from typing import Any

import pytest
import torch

from torchbolt.core.optimizer import LightningOptimizer
from torchbolt.demos.boring_classes import BoringModel


class _Logger:
    def __init__(self) -> None:
        self.logged: list[dict[str, Any]] = []

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.logged.append(metrics)


class _FabricLike:
    """The part of Lightning Fabric's interface a LightningModule uses (``fabric.setup`` sets ``_fabric``)."""

    global_rank = 0

    def __init__(self, loggers: list[_Logger]) -> None:
        self.loggers = loggers
        self.backward_calls: list[torch.Tensor] = []
        self.clip_calls: list[dict[str, Any]] = []

    @property
    def logger(self) -> _Logger:
        return self.loggers[0]

    def setup(self, module: BoringModel, *optimizers: torch.optim.Optimizer) -> BoringModel:
        module._fabric = self
        module._fabric_optimizers = list(optimizers)
        return module

    def log_dict(self, metrics: dict[str, Any], step: int | None = None) -> None:
        for logger in self.loggers:
            logger.log_metrics(metrics=metrics, step=step)

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        self.backward_calls.append(loss)
        loss.backward(*args, **kwargs)

    def clip_gradients(self, module: Any, optimizer: Any, clip_val: float | None = None,
                       max_norm: float | None = None) -> None:
        self.clip_calls.append({"module": module, "clip_val": clip_val, "max_norm": max_norm})


def test_module_without_fabric_has_none() -> None:
    model = BoringModel()
    assert model.fabric is None
    with pytest.raises(RuntimeError, match="not attached to a `Trainer`"):
        _ = model.trainer


def test_logging_loggers_and_optimizers_go_through_fabric() -> None:
    logger = _Logger()
    fabric = _FabricLike([logger])
    model = BoringModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fabric.setup(model, opt)

    assert model.fabric is fabric and model.logger is logger and model.loggers == [logger]
    assert model.optimizers() is opt
    model.log("loss", 0.5)
    model.log_dict({"a": 1, "b": torch.tensor(2.0)})
    model.log("hidden", 3, logger=False)  # Fabric has no other destination: nothing is logged
    assert logger.logged == [{"loss": 0.5}, {"a": 1, "b": torch.tensor(2.0)}]
    with pytest.raises(ValueError, match="`list` values cannot be logged"):
        model.log("bad", [1, 2])
    with pytest.raises(ValueError, match="nested dictionaries cannot be logged"):
        model.log_dict({"outer": {"inner": 1}})


def test_trainer_reads_go_to_fabric_and_missing_ones_say_why() -> None:
    model = _FabricLike([]).setup(BoringModel())
    assert model.trainer.global_rank == 0
    with pytest.raises(AttributeError, match="tried to access `self.trainer.current_epoch`"):
        _ = model.trainer.current_epoch


def test_backward_and_clipping_go_through_fabric() -> None:
    fabric = _FabricLike([])
    model = fabric.setup(BoringModel())
    model.automatic_optimization = False
    loss = model(torch.randn(2, 32)).sum()
    model.manual_backward(loss)
    assert fabric.backward_calls == [loss] and model.layer.weight.grad is not None
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.clip_gradients(opt, gradient_clip_val=0.5, gradient_clip_algorithm="value")
    model.clip_gradients(opt, gradient_clip_val=2.0, gradient_clip_algorithm="norm")
    assert [(c["clip_val"], c["max_norm"]) for c in fabric.clip_calls] == [(0.5, None), (None, 2.0)]
    assert fabric.clip_calls[0]["module"] is model


def test_fabric_setter_reaches_nested_modules_weakly_and_is_not_pickled() -> None:
    outer, inner = BoringModel(), BoringModel()
    outer.inner = inner
    fabric = _FabricLike([])
    outer.fabric = fabric
    assert inner.fabric == fabric  # the same object, seen through a weak proxy
    assert pickle.loads(pickle.dumps(outer)).fabric is None
    assert copy.deepcopy(BoringModel()).fabric is None
    del fabric
    gc.collect()
    with pytest.raises(ReferenceError):
        _ = outer.fabric.global_rank  # the module did not keep Fabric alive


def test_with_lightning_fabric_itself() -> None:
    fabric_module = pytest.importorskip("lightning_fabric")
    model = BoringModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fabric = fabric_module.Fabric(accelerator="cpu", devices=1)
    _, wrapped_opt = fabric.setup(model, opt)
    assert model.fabric is fabric
    assert model.optimizers() is wrapped_opt
    assert model.trainer.global_rank == 0


def test_lightning_optimizer_repr_and_live_state() -> None:
    layer = torch.nn.Linear(3, 4)
    sgd = torch.optim.SGD(layer.parameters(), lr=0.1)
    wrapped = LightningOptimizer(sgd)
    assert repr(wrapped) == "Lightning" + repr(sgd) and repr(wrapped).startswith("LightningSGD (")

    source = torch.optim.Adam(layer.parameters(), lr=1.0)
    target = torch.optim.Adam(layer.parameters(), lr=100.0)
    view = LightningOptimizer(target)
    target.load_state_dict(source.state_dict())  # replaces the optimizer's param_groups list
    assert view.param_groups[0]["lr"] == 1.0
    other = LightningOptimizer(torch.optim.Adam(layer.parameters(), lr=100.0))
    other.load_state_dict(source.state_dict())
    assert other.param_groups[0]["lr"] == 1.0 and other.optimizer.param_groups is other.param_groups
    view.param_groups[0]["lr"] = 0.5
    assert target.param_groups[0]["lr"] == 0.5


def test_toggle_optimizer_records_and_clears_the_switched_requires_grad() -> None:
    # Lightning keeps the saved flags in `_param_requires_grad_state` (code that checks whether a
    # toggle is active reads it): filled by toggle_optimizer, emptied by untoggle_optimizer
    import torch
    from torch import nn

    import torchbolt as pl

    class Two(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

    model = Two()
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    model.trainer = trainer
    first, second = torch.optim.SGD(model.a.parameters(), lr=0.1), torch.optim.SGD(model.b.parameters(), lr=0.1)
    trainer.strategy.optimizers = [first, second]
    assert not model._param_requires_grad_state
    with model.toggled_optimizer(first):
        assert model._param_requires_grad_state
        assert all(p.requires_grad for p in model.a.parameters())
        assert not any(p.requires_grad for p in model.b.parameters())
    assert not model._param_requires_grad_state
    assert all(p.requires_grad for p in model.parameters())
