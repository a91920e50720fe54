"""``LambdaCallback``, ``ModelSummary`` and ``RichModelSummary``."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import torchbolt as pl
from torchbolt.callbacks import LambdaCallback, ModelSummary, RichModelSummary
from torchbolt.demos.boring_classes import BoringModel


def fit(callbacks: list[Any], **kwargs: Any) -> pl.Trainer:
    options: dict[str, Any] = {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "logger": False,
                               "enable_checkpointing": False, "enable_progress_bar": False,
                               "enable_model_summary": False}
    options.update(kwargs)
    trainer = pl.Trainer(callbacks=callbacks, **options)
    trainer.fit(BoringModel())
    return trainer


def test_lambda_callback_calls_each_function_at_its_hook_with_the_hook_arguments() -> None:
    calls: list[tuple[Any, ...]] = []
    callback = LambdaCallback(
        on_train_epoch_start=lambda trainer, module: calls.append(("epoch_start", trainer.current_epoch)),
        on_train_batch_end=lambda trainer, module, outputs, batch, batch_idx: calls.append(("batch_end", batch_idx)),
        on_fit_end=lambda trainer, module: calls.append(("fit_end",)),
    )
    fit([callback])
    assert calls == [("epoch_start", 0), ("batch_end", 0), ("batch_end", 1), ("fit_end",)]


def test_lambda_callback_rejects_names_that_are_not_hooks() -> None:
    with pytest.raises(TypeError, match=r"\['on_train_epoch_ends'\], which are not Callback hooks"):
        LambdaCallback(on_train_epoch_ends=print)


def test_model_summary_logs_the_layers_at_fit_start(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="torchbolt"):
        fit([ModelSummary(max_depth=1)], enable_model_summary=True)
    out = caplog.text
    assert "layer" in out and "Linear" in out and "66" in out and "Total Flops" in out


def test_model_summary_max_depth_zero_turns_the_summary_off(caplog: pytest.LogCaptureFixture) -> None:
    # 0 means "no summary" for the callback (the utility still reports totals, see test_model_summary_table)
    with caplog.at_level(logging.INFO, logger="torchbolt"):
        fit([ModelSummary(max_depth=0)], enable_model_summary=True)
    assert "Total params" not in caplog.text


def test_model_summary_rejects_a_bad_max_depth() -> None:
    with pytest.raises(ValueError, match="max_depth=-2"):
        ModelSummary(max_depth=-2)


def test_rich_model_summary_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("rich", reason="RichModelSummary needs rich")
    fit([RichModelSummary()], enable_model_summary=True)
    out = capsys.readouterr().out
    assert "Linear" in out and "Trainable params" in out


def test_enable_model_summary_false_prints_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="torchbolt"):
        fit([])
    assert "Total params" not in caplog.text
