"""What a checkpoint restores depends on the entry point, as in Lightning 2.x."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import pytest

import torchbolt as pl
from torchbolt.callbacks import EarlyStopping, ModelCheckpoint
from torchbolt.demos.boring_classes import BoringModel


class Recorder(pl.Callback):
    def __init__(self) -> None:
        self.loaded: list[str] = []

    def state_dict(self) -> dict[str, Any]:
        return {"x": 1}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.loaded.append("load_state_dict")

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: Any) -> None:
        self.loaded.append("on_load_checkpoint")


class ConstantLoss(BoringModel):
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", 1.0)

    def configure_optimizers(self) -> Any:
        import torch

        return torch.optim.SGD(self.parameters(), lr=0.0)


def _trainer(callbacks: list[pl.Callback], **kwargs: Any) -> pl.Trainer:
    return pl.Trainer(limit_train_batches=2, limit_val_batches=1, limit_test_batches=1, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                      **kwargs)


def _saved_checkpoint(tmp_path: Path) -> str:
    trainer = _trainer([Recorder(), EarlyStopping(monitor="val_loss")], max_epochs=1, enable_checkpointing=False)
    trainer.fit(ConstantLoss())
    path = str(tmp_path / "run.ckpt")
    trainer.save_checkpoint(path)
    return path


@pytest.mark.parametrize("entry", ["validate", "test", "predict"])
def test_evaluation_with_ckpt_path_leaves_callback_state_alone(entry: str, tmp_path: Path) -> None:
    path = _saved_checkpoint(tmp_path)
    recorder = Recorder()
    trainer = _trainer([recorder], max_epochs=1, enable_checkpointing=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # in particular no "callbacks used to create the checkpoint" warning
        getattr(trainer, entry)(ConstantLoss(), ckpt_path=path)
    assert recorder.loaded == []


def test_fit_with_ckpt_path_restores_callback_state(tmp_path: Path) -> None:
    path = _saved_checkpoint(tmp_path)
    recorder = Recorder()
    _trainer([recorder, EarlyStopping(monitor="val_loss")], max_epochs=2,
             enable_checkpointing=False).fit(ConstantLoss(), ckpt_path=path)
    assert recorder.loaded == ["on_load_checkpoint", "load_state_dict"]


def test_resuming_an_early_stopped_run_says_why_it_does_not_train(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    first = _trainer([EarlyStopping(monitor="val_loss", patience=1), checkpoint], max_epochs=10)
    first.fit(ConstantLoss())
    assert first.current_epoch == 2  # stopped by EarlyStopping
    resumed = _trainer([], max_epochs=10, enable_checkpointing=False)
    with caplog.at_level(logging.INFO, logger="torchbolt"):
        resumed.fit(ConstantLoss(), ckpt_path=checkpoint.last_model_path)
    assert resumed.global_step == first.global_step
    assert "saved after a stop had been requested" in caplog.text
