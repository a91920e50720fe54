"""Ending an epoch early from ``on_train_batch_start``, validation turned off, and the bar's total with max_steps."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch

import torchbolt as pl
from torchbolt.demos.boring_classes import BoringModel


def _trainer(tmp_path: Path, **kwargs: Any) -> pl.Trainer:
    defaults: dict[str, Any] = dict(default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                                    enable_model_summary=False, enable_progress_bar=False)
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


@pytest.mark.parametrize("epochs", [1, 3])
def test_minus_one_ends_the_epoch_as_its_last_batch_and_epoch_schedulers_still_step(tmp_path: Path,
                                                                                      epochs: int) -> None:
    seen: list[bool] = []

    class SkipsRest(BoringModel):
        def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
            if batch_idx == 2:
                return -1
            return None

        def on_train_epoch_end(self) -> None:
            seen.append(self.trainer.is_last_batch)

    model = SkipsRest()
    trainer = _trainer(tmp_path, max_epochs=epochs, limit_train_batches=6, limit_val_batches=0)
    trainer.fit(model)
    assert trainer.global_step == 2 * epochs
    assert seen == [True] * epochs
    # BoringModel's StepLR(step_size=1) is stepped once per epoch although each epoch ended early
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.1**epochs)


@pytest.mark.parametrize("limit_val_batches", [0, 0.0])
def test_val_check_interval_beyond_the_epoch_is_accepted_without_validation(tmp_path: Path,
                                                                            limit_val_batches: float) -> None:
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=5, val_check_interval=10,
                       limit_val_batches=limit_val_batches)
    trainer.fit(BoringModel())
    assert trainer.global_step == 5
    with pytest.raises(ValueError, match="must be less than or equal to the number of the training batches"):
        _trainer(tmp_path, max_epochs=1, limit_train_batches=5, val_check_interval=10).fit(BoringModel())


def test_progress_bar_total_of_an_endless_loader_is_the_steps_left(tmp_path: Path) -> None:
    model = BoringModel()
    endless = (torch.randn(4, 32) for _ in itertools.count())
    model.train_dataloader = lambda: endless  # type: ignore[method-assign]
    trainer = _trainer(tmp_path, max_steps=7, max_epochs=-1, limit_val_batches=0, enable_progress_bar=True)
    bar = trainer.progress_bar_callback
    trainer.fit(model)
    assert bar is not None and bar.train_progress_bar.total == 7
    assert trainer.global_step == 7


def test_is_last_batch_keeps_the_finished_epochs_answer_after_fit(tmp_path: Path) -> None:
    # read after `fit` (or in `on_train_end`), it still describes the last epoch's final batch
    trainer = _trainer(tmp_path, max_epochs=2, limit_train_batches=3, limit_val_batches=0)
    trainer.fit(BoringModel())
    assert trainer.is_last_batch


def test_val_check_interval_can_be_set_on_the_trainer_and_is_checked(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=4, val_check_interval=0.5)
    trainer.val_check_interval = 2
    assert trainer.val_check_interval == 2
    with pytest.raises(Exception, match="val_check_interval"):
        trainer.val_check_interval = -3
    assert trainer.val_check_interval == 2  # a refused value changes nothing
    validations: list[int] = []

    class Counts(BoringModel):
        def on_validation_start(self) -> None:
            validations.append(self.trainer.global_step)

    trainer.fit(Counts())
    assert validations == [0, 2, 4]  # the sanity check, then every 2 batches


def test_fit_validation_batch_counts_restart_with_each_training_epoch(tmp_path: Path) -> None:
    per_epoch: list[int] = []

    class Reads(BoringModel):
        def on_train_epoch_end(self) -> None:
            per_epoch.append(self.trainer.fit_loop.epoch_loop.val_loop.batch_progress.total.completed)

    trainer = _trainer(tmp_path, max_epochs=3, limit_train_batches=4, limit_val_batches=1, val_check_interval=0.5,
                       num_sanity_val_steps=0)
    trainer.fit(Reads())
    # two validations of one batch in every epoch: the count is the epoch's, not the fit's
    assert per_epoch == [2, 2, 2]
