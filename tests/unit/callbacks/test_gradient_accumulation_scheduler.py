"""GradientAccumulationScheduler: the accumulation factor, and so the number of optimizer steps, per epoch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.callbacks import Callback, GradientAccumulationScheduler
from torchbolt.utilities.exceptions import MisconfigurationException


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    return TensorDataset(x, x.sum(dim=1, keepdim=True))


class Model(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return DataLoader(_data(), batch_size=4)  # 8 batches per epoch


class StepsPerEpoch(Callback):
    def __init__(self) -> None:
        self.steps: dict[int, int] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.steps[trainer.current_epoch] = self.steps.get(trainer.current_epoch, 0) + 1


def _trainer(*callbacks: Callback, **kwargs) -> pl.Trainer:
    kwargs.setdefault("max_epochs", 4)
    return pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                      callbacks=list(callbacks), **kwargs)


def test_schedule_changes_the_number_of_optimizer_steps_per_epoch():
    counter = StepsPerEpoch()
    trainer = _trainer(counter, GradientAccumulationScheduler({1: 2, 2: 4, 3: 3}))
    trainer.fit(Model())
    # 8 batches: factor 1 -> 8 steps, 2 -> 4, 4 -> 2, 3 -> windows of 3, 3, 2 -> 3 steps
    assert counter.steps == {0: 8, 1: 4, 2: 2, 3: 3}
    assert trainer.global_step == 17
    assert trainer.accumulate_grad_batches == 1  # the Trainer's own setting is back after fit


def test_accumulated_gradient_is_the_mean_over_the_window():
    grads = []

    class Grab(Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            grads.append(pl_module.net.weight.grad.clone())

    model = Model()
    initial = [p.detach().clone() for p in model.parameters()]
    _trainer(Grab(), GradientAccumulationScheduler({0: 8}), max_epochs=1).fit(model)
    reference = nn.Linear(4, 1)
    with torch.no_grad():
        reference.weight.copy_(initial[0])
        reference.bias.copy_(initial[1])
    x, y = _data().tensors
    F.mse_loss(reference(x), y).backward()
    torch.testing.assert_close(grads[0], reference.weight.grad)


def test_unscheduled_first_epochs_do_not_accumulate():
    scheduler = GradientAccumulationScheduler({2: 4})
    assert [scheduler.get_accumulate_grad_batches(e) for e in range(4)] == [1, 1, 4, 4]


def test_trainer_accumulation_and_the_callback_together_are_rejected():
    trainer = _trainer(GradientAccumulationScheduler({1: 2}), accumulate_grad_batches=2)
    with pytest.raises(ValueError, match="accumulate_grad_batches"):
        trainer.fit(Model())


def test_manual_optimization_is_rejected():
    class Manual(Model):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

    with pytest.raises(RuntimeError, match="manual optimization"):
        _trainer(GradientAccumulationScheduler({1: 2})).fit(Manual())


@pytest.mark.parametrize(("scheduling", "error"), [
    ({}, TypeError), ({-1: 2}, MisconfigurationException), ({1: 0}, MisconfigurationException),
    ({"1": 2}, MisconfigurationException), ({1: 2.5}, MisconfigurationException),
])
def test_invalid_schedules_are_rejected(scheduling, error):
    with pytest.raises(error):
        GradientAccumulationScheduler(scheduling)


def test_trainer_accumulate_grad_batches_setter_validates():
    trainer = _trainer()
    trainer.accumulate_grad_batches = 3
    assert trainer.accumulate_grad_batches == 3
    with pytest.raises(MisconfigurationException, match="int >= 1"):
        trainer.accumulate_grad_batches = 0
