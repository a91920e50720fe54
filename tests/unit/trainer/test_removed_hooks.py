"""Hooks that Lightning 2.x removed fail at the start of the run, as in Lightning 2.x, instead of never running."""

from __future__ import annotations

import pytest

import torchbolt as pl
from torchbolt.demos.boring_classes import BoringModel


def _trainer(**kwargs: object) -> pl.Trainer:
    return pl.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, limit_test_batches=1, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      **kwargs)  # type: ignore[arg-type]


class TrainEpochEnd(BoringModel):
    def training_epoch_end(self, outputs: object) -> None:
        raise AssertionError("never called")


class ValEpochEnd(BoringModel):
    def validation_epoch_end(self, outputs: object) -> None:
        raise AssertionError("never called")


class WithTestEpochEnd(BoringModel):
    def test_epoch_end(self, outputs: object) -> None:
        raise AssertionError("never called")


def test_training_epoch_end_is_refused_by_fit_naming_the_replacement() -> None:
    with pytest.raises(NotImplementedError, match="`training_epoch_end`.*`TrainEpochEnd`.*`on_train_epoch_end`"):
        _trainer().fit(TrainEpochEnd())


def test_validation_epoch_end_is_refused_by_fit_and_validate() -> None:
    with pytest.raises(NotImplementedError, match="`on_validation_epoch_end`"):
        _trainer().fit(ValEpochEnd())
    with pytest.raises(NotImplementedError, match="`validation_epoch_end`"):
        _trainer().validate(ValEpochEnd())


def test_test_epoch_end_is_refused_by_test_only() -> None:
    _trainer().fit(WithTestEpochEnd())  # fit never calls it in 1.x either: no error
    with pytest.raises(NotImplementedError, match="`on_test_epoch_end`"):
        _trainer().test(WithTestEpochEnd())


@pytest.mark.parametrize(("hook", "replacement"), [
    ("on_epoch_start", "on_<train/validation/test>_epoch_start"),
    ("on_batch_end", "on_train_batch_end"),
    ("on_pretrain_routine_start", "on_fit_start"),
])
def test_removed_callback_hooks_raise_with_the_replacement(hook: str, replacement: str) -> None:
    callback = type("OldCallback", (pl.Callback,), {hook: lambda self, trainer, pl_module: None})()
    with pytest.raises(RuntimeError, match=rf"`Callback.{hook}`.*`OldCallback`.*`Callback.{replacement}`"):
        _trainer(callbacks=[callback]).fit(BoringModel())


def test_a_module_with_only_2x_hooks_runs() -> None:
    trainer = _trainer()
    trainer.fit(BoringModel())
    assert trainer.global_step == 1
