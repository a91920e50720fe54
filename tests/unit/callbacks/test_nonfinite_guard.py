"""NonFiniteGuard: a NaN step is skipped without touching weights or optimizer state; persistent NaNs stop or roll back."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.callbacks import Callback, NonFiniteGuard, NonFiniteTrainingError


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    return TensorDataset(x, x.sum(dim=1, keepdim=True))


class Model(pl.LightningModule):
    """Adam on a small MLP; ``bad`` maps a global batch number to how that batch's loss is spoiled."""

    def __init__(self, bad: dict[int, str] | None = None, batch_size: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        self.bad = bad or {}
        self.batch_size = batch_size
        self.seen = 0

    def training_step(self, batch, batch_idx):
        x, y = batch
        number, self.seen = self.seen, self.seen + 1
        loss = F.mse_loss(self.net(x), y)
        kind = self.bad.get(number)
        if kind == "nan_grads":
            return loss * float("nan")  # NaN loss and NaN gradients
        if kind == "nan_loss":
            return loss + float("nan")  # NaN loss, finite gradients
        if kind == "inf_grads":
            return loss * float("inf")
        if kind == "skip":
            return None  # the reference: this batch never updates anything
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return DataLoader(_data(), batch_size=self.batch_size)


def _fit(model: Model, *callbacks: Callback, max_epochs: int = 2, **kwargs) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=max_epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, callbacks=list(callbacks), **kwargs)
    trainer.fit(model)
    return trainer


def _adam_steps(trainer: pl.Trainer) -> list[int]:
    return [int(state["step"]) for state in trainer.optimizers[0].state.values()]


@pytest.mark.parametrize("kind", ["nan_grads", "nan_loss", "inf_grads"])
def test_bad_step_is_skipped_and_training_ends_as_if_that_batch_never_updated(kind):
    reference = Model(bad={5: "skip"})
    reference_trainer = _fit(reference)
    model = Model(bad={5: kind})
    guard = NonFiniteGuard()
    trainer = _fit(model, guard)
    assert guard.skipped_steps == 1 and guard.consecutive == 0
    for expected, actual in zip(reference.parameters(), model.parameters()):
        assert torch.isfinite(actual).all()
        assert torch.equal(expected, actual)
    # Adam's step count and moments are untouched by the skipped step
    assert _adam_steps(trainer) == _adam_steps(reference_trainer) == [15] * 4
    for ref_state, state in zip(reference_trainer.optimizers[0].state.values(), trainer.optimizers[0].state.values()):
        assert torch.equal(ref_state["exp_avg"], state["exp_avg"])
        assert torch.equal(ref_state["exp_avg_sq"], state["exp_avg_sq"])


def test_without_the_guard_the_nan_reaches_the_weights():
    model = Model(bad={5: "nan_grads"})
    _fit(model)
    assert any(not torch.isfinite(p).all() for p in model.parameters())


def test_a_bad_batch_inside_an_accumulation_window_skips_that_window():
    reference = Model(bad={4: "skip", 5: "skip"})
    _fit(reference, accumulate_grad_batches=2)
    model = Model(bad={4: "nan_grads"})
    guard = NonFiniteGuard()
    _fit(model, guard, accumulate_grad_batches=2)
    assert guard.skipped_steps == 1
    for expected, actual in zip(reference.parameters(), model.parameters()):
        assert torch.equal(expected, actual)


def test_consecutive_bad_steps_stop_training_with_a_clear_error():
    model = Model(bad={n: "nan_grads" for n in range(3, 100)})
    guard = NonFiniteGuard(max_consecutive=4)
    with pytest.warns(UserWarning, match="skipped the optimizer step"), \
            pytest.raises(NonFiniteTrainingError, match="4 consecutive optimizer steps") as info:
        _fit(model, guard)
    assert "gradient_clip_val" in str(info.value) and "rollback" in str(info.value)
    assert guard.skipped_steps == 4
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_skipped_steps_are_counted_in_the_logged_metrics():
    trainer = _fit(Model(bad={2: "nan_grads", 9: "nan_loss"}), NonFiniteGuard())
    assert float(trainer.callback_metrics["nonfinite_skipped_steps"]) == 2.0


def test_rollback_reloads_the_checkpoint_and_training_continues(tmp_path):
    path = tmp_path / "good.ckpt"

    class SaveAtStep(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 3:
                trainer.save_checkpoint(path)
                self.weights = [p.detach().clone() for p in pl_module.parameters()]

    class AfterRollback(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if pl_module.seen == 8:  # the batch whose skipped step triggered the rollback
                self.weights = [p.detach().clone() for p in pl_module.parameters()]

    saver, after = SaveAtStep(), AfterRollback()
    model = Model(bad={5: "nan_grads", 6: "nan_grads", 7: "nan_grads"})
    guard = NonFiniteGuard(max_consecutive=3, rollback=path)
    _fit(model, saver, guard, after)
    assert guard.rollbacks == 1 and guard.skipped_steps == 3
    for saved, restored in zip(saver.weights, after.weights):
        assert torch.equal(saved, restored)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_rollback_without_any_checkpoint_raises():
    model = Model(bad={n: "nan_grads" for n in range(2, 100)})
    with pytest.raises(NonFiniteTrainingError, match="found no checkpoint"):
        _fit(model, NonFiniteGuard(max_consecutive=2, rollback=True))


@pytest.mark.filterwarnings("ignore:Error detected in")
def test_detect_anomaly_names_the_operation_that_produced_nan():
    class SqrtOfNegative(Model):
        def training_step(self, batch, batch_idx):
            x, _ = batch
            return torch.sqrt(self.net(x) - 100.0).sum()

    with pytest.raises(RuntimeError, match="SqrtBackward0"):
        _fit(SqrtOfNegative(), max_epochs=1, detect_anomaly=True)


def test_arguments_are_validated():
    from torchbolt.utilities.exceptions import MisconfigurationException

    with pytest.raises(MisconfigurationException, match="max_consecutive"):
        NonFiniteGuard(max_consecutive=0)
    with pytest.raises(MisconfigurationException, match="checks nothing"):
        NonFiniteGuard(check_loss=False, check_grads=False)
    assert math.isfinite(NonFiniteGuard().max_consecutive)


def test_guard_works_under_barebones_without_logging():
    guard = NonFiniteGuard()
    model = Model(bad={5: "nan_grads"})
    trainer = pl.Trainer(max_epochs=1, barebones=True, callbacks=[guard])
    trainer.fit(model)
    assert guard.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
