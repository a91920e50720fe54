"""The default tqdm bar, the rich bar, and the model summaries."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import torchbolt as pl
from tests.helpers.loggers import RecordingLogger
from tests.helpers.models import ClassifierModule
from torchbolt.callbacks import ModelSummary, RichModelSummary, RichProgressBar, TQDMProgressBar


def _trainer(**kwargs: Any) -> pl.Trainer:
    defaults: dict[str, Any] = {"max_epochs": 1, "enable_checkpointing": False, "enable_model_summary": False,
                                "logger": RecordingLogger()}
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


class ShowsAcc(ClassifierModule):
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        loss = super().training_step(batch, batch_idx)
        self.log("acc", 0.75, prog_bar=True)
        return loss


def test_tqdm_bar_shows_epoch_loss_prog_bar_metrics_and_version(capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHBOLT_PROGRESS", "bar")  # captured output is not a terminal: force the bar
    _trainer().fit(ShowsAcc())
    out = capsys.readouterr().out
    assert "Epoch 0" in out and "loss=" in out and "acc=0.750" in out and "v_num=0" in out
    assert "Validation" in out and "Sanity Checking" in out


class CountingBar(TQDMProgressBar):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metric_reads = 0

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        self.metric_reads += 1
        return super().get_metrics(trainer, pl_module)


def test_refresh_rate_limits_metric_conversion() -> None:
    every, fourth = CountingBar(refresh_rate=1, mode="bar"), CountingBar(refresh_rate=4, mode="bar")
    _trainer(callbacks=[every], limit_val_batches=0).fit(ClassifierModule())
    _trainer(callbacks=[fourth], limit_val_batches=0).fit(ClassifierModule())
    # 8 batches: every batch vs batches 4 and 8, plus one read at the epoch's end
    assert every.metric_reads == 9 and fourth.metric_reads == 3


def test_refresh_rate_zero_disables_the_bar(capsys: pytest.CaptureFixture[str]) -> None:
    bar = TQDMProgressBar(refresh_rate=0)
    _trainer(callbacks=[bar]).fit(ClassifierModule())
    assert not bar.is_enabled
    out = capsys.readouterr().out
    assert "Epoch 0" not in out and "epoch 1" not in out  # neither a bar nor plain lines


def test_invalid_refresh_rate() -> None:
    with pytest.raises(pl.utilities.MisconfigurationException, match="refresh_rate"):
        TQDMProgressBar(refresh_rate=-1)


def test_rich_progress_bar_runs_every_stage(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("rich", reason="RichProgressBar needs rich (installed by the all extra)")
    trainer = _trainer(callbacks=[RichProgressBar(leave=True)])
    model = ClassifierModule()
    trainer.fit(model)
    trainer.test(model, verbose=False)
    trainer.predict(model)
    assert "Epoch 0" in capsys.readouterr().out


def test_model_summary_max_depth(caplog: pytest.LogCaptureFixture) -> None:
    # the text summary is logged (INFO, ``torchbolt`` logger), as Lightning's is
    with caplog.at_level(logging.INFO, logger="torchbolt"):
        _trainer(callbacks=[ModelSummary(max_depth=2)], limit_train_batches=1, limit_val_batches=0).fit(
            ClassifierModule())
    out = caplog.text
    assert "net.0" in out and "Linear" in out and "ReLU" in out
    with pytest.raises(ValueError, match="max_depth"):
        ModelSummary(max_depth=-2)


def test_rich_model_summary(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("rich", reason="RichModelSummary needs rich (installed by the all extra)")
    _trainer(callbacks=[RichModelSummary()], limit_train_batches=1, limit_val_batches=0).fit(ClassifierModule())
    out = capsys.readouterr().out
    assert "Trainable params" in out and "Sequential" in out


def test_summary_counts_trainable_and_frozen_parameters() -> None:
    from torchbolt.utilities.model_summary import ModelSummary as Summary

    model = ClassifierModule()
    for p in model.net[0].parameters():
        p.requires_grad = False
    summary = Summary(model, max_depth=1)
    assert summary.total_parameters == 8 * 16 + 16 + 16 * 2 + 2
    assert summary.trainable_parameters == 16 * 2 + 2
    assert "Non-trainable params" in str(summary)
