"""``1`` and ``1.0`` mean different things for the batch limits; the Trainer says which it understood."""

from __future__ import annotations

import logging

import pytest

import torchbolt as pl


@pytest.mark.parametrize(("argument", "value", "meaning"), [
    ("limit_train_batches", 1, "1 batch per epoch will be used"),
    ("limit_train_batches", 1.0, "100% of the batches per epoch will be used"),
    ("limit_val_batches", 1, "1 batch will be used"),
    ("limit_test_batches", 1.0, "100% of the batches will be used"),
    ("overfit_batches", 1, "1 batch will be used"),
    ("val_check_interval", 1, "validation will run after every batch"),
    ("val_check_interval", 1.0, "validation will run at the end of the training epoch"),
])
def test_one_and_one_point_zero_are_spelled_out(caplog: pytest.LogCaptureFixture, argument: str, value: object,
                                                meaning: str) -> None:
    with caplog.at_level(logging.INFO):
        pl.Trainer(logger=False, **{argument: value})
    assert f"`Trainer({argument}={value})` was configured so {meaning}" in caplog.text


def test_nothing_is_said_for_the_defaults_or_other_values(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        pl.Trainer(logger=False, limit_train_batches=5, limit_val_batches=0.5)
    assert "was configured so" not in caplog.text


def test_barebones_says_what_it_turns_off(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        pl.Trainer(barebones=True)
    assert "running in `Trainer(barebones=True)` mode" in caplog.text and "checkpointing" in caplog.text


def test_predict_refuses_a_model_it_cannot_run_before_any_hook() -> None:
    from torchbolt.demos.boring_classes import BoringModel
    from torchbolt.utilities.exceptions import MisconfigurationException

    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    no_step = BoringModel()
    no_step.predict_step = None  # type: ignore[assignment, method-assign]
    with pytest.raises(MisconfigurationException, match=r"`predict_step` cannot be None"):
        trainer.predict(no_step)
    no_forward = BoringModel()  # the default predict_step calls forward
    no_forward.forward = None  # type: ignore[assignment, method-assign]
    with pytest.raises(MisconfigurationException, match=r"`Trainer.predict` requires `forward` method"):
        trainer.predict(no_forward)


def test_lightning_configuration_validator_functions_name_the_removed_epoch_end_hooks() -> None:
    from torchbolt.demos.boring_classes import BoringModel
    from torchbolt.trainer import configuration_validator as validator

    class OldStyle(BoringModel):
        def validation_epoch_end(self, outputs: object) -> None:
            pass

    check_fit = getattr(validator, "__verify_train_val_loop_configuration")
    check_eval = getattr(validator, "__verify_eval_loop_configuration")
    with pytest.raises(NotImplementedError, match="validation_epoch_end` has been removed in v2.0"):
        check_fit(pl.Trainer(), OldStyle())
    with pytest.raises(NotImplementedError, match="validation_epoch_end` has been removed in v2.0"):
        check_eval(OldStyle(), "val")
    check_eval(OldStyle(), "test")  # the test stage never calls it: nothing to refuse
