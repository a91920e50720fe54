"""With a torch optimizer whose ``step(closure)`` starts by calling the closure, the loop calls the closure and
then ``step()``: the weights are those of ``optimizer.step(closure)``, bit for bit, and anything that would see
the difference (a step pre-hook, a replaced ``step``, a subclass) gets ``step(closure)`` as before."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl

_OPTIMIZERS = {
    "sgd_momentum": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True),
    "adam": lambda params: torch.optim.Adam(params, lr=0.01),
    "adamw_amsgrad": lambda params: torch.optim.AdamW(params, lr=0.01, amsgrad=True),
    "rmsprop": lambda params: torch.optim.RMSprop(params, lr=0.01, centered=True),
    "adagrad": lambda params: torch.optim.Adagrad(params, lr=0.1),
    "nadam": lambda params: torch.optim.NAdam(params, lr=0.01),
    "lbfgs": lambda params: torch.optim.LBFGS(params, lr=0.1, max_iter=3),
}


def _data() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(48, 8, generator=generator), torch.randint(0, 3, (48,), generator=generator))


def _net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))


class _Model(pl.LightningModule):
    def __init__(self, make_optimizer: Any, scheduler: bool = False) -> None:
        super().__init__()
        self.net = _net()
        self.make_optimizer = make_optimizer
        self.scheduler = scheduler
        self.events: list[str] = []

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self.events.append(f"training_step:{batch_idx}")
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = self.make_optimizer(self.parameters())
        if not self.scheduler:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 2, 0.5)}

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(_data(), batch_size=8)


def _fit(model: _Model, **kwargs: Any) -> pl.Trainer:
    settings: dict[str, Any] = dict(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                    enable_model_summary=False, accelerator="cpu")
    trainer = pl.Trainer(**{**settings, **kwargs})
    trainer.fit(model)
    return trainer


def _by_hand(make_optimizer: Any, scheduler: bool = False) -> dict[str, Tensor]:
    """What a loop that calls ``optimizer.step(closure)`` computes (Lightning's way)."""
    net = _net()
    optimizer = make_optimizer(net.parameters())
    lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 2, 0.5) if scheduler else None
    for _ in range(2):
        for x, y in DataLoader(_data(), batch_size=8):
            def closure(x: Tensor = x, y: Tensor = y) -> Tensor:
                loss = nn.functional.cross_entropy(net(x), y)
                optimizer.zero_grad()
                loss.backward()
                return loss.detach()

            optimizer.step(closure)
        if lr_scheduler is not None:
            lr_scheduler.step()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("name", sorted(_OPTIMIZERS))
@pytest.mark.parametrize("scheduler", [False, True])
def test_the_weights_are_those_of_step_with_the_closure(name: str, scheduler: bool) -> None:
    model = _Model(_OPTIMIZERS[name], scheduler)
    _fit(model)
    expected = _by_hand(_OPTIMIZERS[name], scheduler)
    for key, value in model.net.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_a_step_pre_hook_still_runs_before_the_training_step() -> None:
    class Hooked(_Model):
        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
            optimizer.register_step_pre_hook(lambda opt, args, kwargs: self.events.append("pre_hook"))
            optimizer.register_step_post_hook(lambda opt, args, kwargs: self.events.append("post_hook"))
            return optimizer

    model = Hooked(None)
    _fit(model, max_epochs=1, limit_train_batches=2)
    assert model.events == ["pre_hook", "training_step:0", "post_hook", "pre_hook", "training_step:1", "post_hook"]


def test_a_global_step_pre_hook_still_runs_before_the_training_step() -> None:
    model = _Model(lambda params: torch.optim.Adam(params, lr=0.01))
    handle = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: model.events.append("global_pre_hook"))
    try:
        _fit(model, max_epochs=1, limit_train_batches=2)
    finally:
        handle.remove()
    assert model.events == ["global_pre_hook", "training_step:0", "global_pre_hook", "training_step:1"]


def test_a_step_replaced_on_the_instance_receives_the_closure() -> None:
    # e.g. a sharpness-aware wrapper that evaluates the closure twice per update
    calls: list[int] = []

    def twice(self_optimizer: torch.optim.Optimizer) -> Any:
        original = self_optimizer.step

        def step(closure: Any = None) -> Any:
            assert closure is not None, "the replaced step must receive the closure"
            calls.append(1)
            closure()
            return original(closure)

        return step

    class Replaced(_Model):
        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
            optimizer.step = twice(optimizer)  # type: ignore[method-assign]
            return optimizer

    model = Replaced(None)
    _fit(model, max_epochs=1, limit_train_batches=3)
    assert len(calls) == 3
    assert model.events == [f"training_step:{i}" for i in range(3) for _ in range(2)]


def test_a_subclass_of_a_torch_optimizer_keeps_its_own_step() -> None:
    seen: list[bool] = []

    class Logged(torch.optim.SGD):
        def step(self, closure: Any = None) -> Any:  # type: ignore[override]
            seen.append(closure is not None)
            return super().step(closure)

    _fit(_Model(lambda params: Logged(params, lr=0.1)), max_epochs=1, limit_train_batches=2)
    assert seen == [True, True]


def test_fitting_inside_no_grad_still_trains() -> None:
    model = _Model(_OPTIMIZERS["adam"])
    before = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        _fit(model, max_epochs=1, limit_train_batches=2)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_a_mocked_step_receives_the_closure() -> None:
    # tests that replace `step` with a mock (on the class or the instance) see Lightning's call
    from unittest import mock

    model = _Model(lambda params: torch.optim.SGD(params, lr=0.1))
    with mock.patch.object(torch.optim.SGD, "step") as step:
        step.side_effect = lambda closure=None: closure()
        _fit(model, max_epochs=1, limit_train_batches=2)
    assert [call.kwargs.get("closure") is not None for call in step.call_args_list] == [True, True]

    class OnInstance(_Model):
        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.Adam(self.parameters(), lr=0.01)
            optimizer.step = mock.MagicMock(side_effect=lambda closure=None: closure())  # type: ignore[method-assign]
            self.step_mock = optimizer.step
            return optimizer

    model = OnInstance(None)
    _fit(model, max_epochs=1, limit_train_batches=2)
    assert [call.kwargs.get("closure") is not None for call in model.step_mock.call_args_list] == [True, True]
