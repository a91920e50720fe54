"""``val_check_interval`` as wall-clock time: accepted forms, when validation runs, and no clock reads otherwise."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
import torch

import torchbolt as pl
from tests.helpers.models import ClassifierModule, quiet_trainer
from torchbolt.utilities.exceptions import MisconfigurationException


class _Clock:
    """A stand-in for ``time.monotonic`` that advances ``step`` seconds per read (and counts the reads)."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        value = self.now
        self.now += self.step
        return value


class _CountingValidations(ClassifierModule):
    def __init__(self) -> None:
        super().__init__()
        self.per_epoch: list[int] = []
        self._count = 0

    def on_train_epoch_start(self) -> None:
        self._count = 0

    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking:
            self._count += 1

    def on_train_epoch_end(self) -> None:
        self.per_epoch.append(self._count)


@pytest.mark.parametrize("interval", ["00:00:00:02", {"seconds": 2}, timedelta(seconds=2)])
def test_the_three_time_forms_mean_the_same(interval: Any) -> None:
    trainer = pl.Trainer(val_check_interval=interval, logger=False)
    assert trainer.val_check_interval == timedelta(seconds=2)


@pytest.mark.parametrize("bad", ["2 seconds", "00:00:02", "00:00:00:xx", {"parsecs": 1}, {"seconds": 0}])
def test_bad_time_intervals_say_what_is_expected(bad: Any) -> None:
    with pytest.raises(MisconfigurationException, match="val_check_interval"):
        pl.Trainer(val_check_interval=bad)


def test_validation_runs_when_the_interval_has_elapsed(monkeypatch: pytest.MonkeyPatch) -> None:
    # each clock read is one second later; the loop reads the clock when the training data is loaded, once per
    # batch and once after each validation: with 2 seconds, validation runs after every second batch
    clock = _Clock(step=1.0)
    monkeypatch.setattr(time, "monotonic", clock)
    model = _CountingValidations()
    quiet_trainer(max_epochs=2, limit_train_batches=8, limit_val_batches=1, num_sanity_val_steps=0,
                  val_check_interval="00:00:00:02").fit(model)
    assert model.per_epoch == [4, 4]


def test_time_and_epoch_gating_combine(monkeypatch: pytest.MonkeyPatch) -> None:
    # only every second epoch may validate; within it, the interval decides
    clock = _Clock(step=1.0)
    monkeypatch.setattr(time, "monotonic", clock)
    model = _CountingValidations()
    quiet_trainer(max_epochs=4, limit_train_batches=6, limit_val_batches=1, num_sanity_val_steps=0,
                  check_val_every_n_epoch=2, val_check_interval={"seconds": 2}).fit(model)
    assert model.per_epoch[0] == 0 and model.per_epoch[2] == 0
    assert model.per_epoch[1] > 0 and model.per_epoch[3] > 0


def test_batch_based_validation_reads_no_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock(step=1.0)
    monkeypatch.setattr(time, "monotonic", clock)
    quiet_trainer(max_epochs=2, limit_train_batches=6, limit_val_batches=1, val_check_interval=2,
                  ).fit(ClassifierModule())
    assert clock.reads == 0


def test_time_based_validation_with_the_real_clock() -> None:
    class Slow(_CountingValidations):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            time.sleep(0.03)
            return super().training_step(batch, batch_idx)

    model = Slow()
    quiet_trainer(limit_train_batches=8, limit_val_batches=1, num_sanity_val_steps=0,
                  val_check_interval={"milliseconds": 50}).fit(model)
    # 8 batches of >= 30 ms: the 50 ms interval elapses at least twice, and at most once per batch
    assert 2 <= model.per_epoch[0] <= 8


def test_fast_dev_run_ignores_the_time_interval() -> None:
    trainer = pl.Trainer(fast_dev_run=True, val_check_interval="00:01:00:00", logger=False)
    assert trainer.val_check_interval == 1.0
