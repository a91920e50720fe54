"""CSVLogger: metrics.csv read back with the csv module, hparams.yaml with yaml."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import yaml

from torchbolt import Trainer
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.loggers import CSVLogger


def _rows(logger: CSVLogger) -> tuple[list[str], list[dict[str, str]]]:
    with open(os.path.join(logger.log_dir, "metrics.csv"), newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


class LoggingModel(BoringModel):
    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.log("train_loss", out["loss"], on_step=True, on_epoch=True)
        return out

    def validation_step(self, batch, batch_idx):
        out = super().validation_step(batch, batch_idx)
        self.log("val_loss", out["x"])
        return out


def test_fit_writes_sorted_header_with_step_and_epoch(tmp_path: Path):
    logger = CSVLogger(tmp_path)
    trainer = Trainer(logger=logger, max_epochs=2, limit_train_batches=2, limit_val_batches=1, log_every_n_steps=1,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(LoggingModel())
    header, rows = _rows(logger)
    assert header == ["epoch", "step", "train_loss_epoch", "train_loss_step", "val_loss"]
    step_rows = [(r["step"], r["epoch"]) for r in rows if r["train_loss_step"]]
    assert step_rows == [("0", "0"), ("1", "0"), ("2", "1"), ("3", "1")]
    epoch_rows = [r["step"] for r in rows if r["train_loss_epoch"]]
    assert epoch_rows == ["1", "3"]
    assert [r["step"] for r in rows if r["val_loss"]] == ["1", "3"]


def test_header_grows_with_new_keys_keeping_earlier_rows(tmp_path: Path):
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"b": 1.0}, step=0)
    logger.save()
    logger.log_metrics({"a": 2.0, "b": 3.0}, step=1)
    logger.save()
    logger.log_metrics({"c": 4.0}, step=2)
    logger.save()
    header, rows = _rows(logger)
    assert header == ["a", "b", "c", "step"]
    assert rows == [
        {"a": "", "b": "1.0", "c": "", "step": "0"},
        {"a": "2.0", "b": "3.0", "c": "", "step": "1"},
        {"a": "", "b": "", "c": "4.0", "step": "2"},
    ]


def test_rows_are_buffered_until_flush_logs_every_n_steps(tmp_path: Path):
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=3)
    logger.log_metrics({"x": 0.0}, step=0)
    logger.log_metrics({"x": 1.0}, step=1)
    assert not os.path.exists(os.path.join(logger.log_dir, "metrics.csv"))
    logger.log_metrics({"x": 2.0}, step=2)  # (step + 1) % 3 == 0: written
    assert [r["step"] for r in _rows(logger)[1]] == ["0", "1", "2"]


def test_step_defaults_to_the_row_count(tmp_path: Path):
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"x": 1.0})
    logger.log_metrics({"x": 2.0})
    logger.save()
    assert [r["step"] for r in _rows(logger)[1]] == ["0", "1"]


def test_resumed_run_in_the_same_version_appends(tmp_path: Path):
    first = CSVLogger(tmp_path, version=0)
    first.log_metrics({"loss": 1.0}, step=0)
    first.finalize("success")
    with pytest.warns(UserWarning, match="exists and is not empty"):
        second = CSVLogger(tmp_path, version=0)
        second.log_metrics({"acc": 0.5}, step=1)
        second.finalize("success")
    header, rows = _rows(second)
    assert header == ["acc", "loss", "step"]
    assert rows == [{"acc": "", "loss": "1.0", "step": "0"}, {"acc": "0.5", "loss": "", "step": "1"}]


def test_a_zero_byte_metrics_file_left_behind_is_replaced(tmp_path: Path):
    (tmp_path / "exp" / "version_0").mkdir(parents=True)
    leftover = tmp_path / "exp" / "version_0" / "metrics.csv"
    leftover.touch()
    logger = CSVLogger(tmp_path, name="exp", version=0)
    with pytest.warns(UserWarning, match="exists and is not empty"):
        _ = logger.experiment
    assert not leftover.exists()
    logger.log_metrics({"loss": 2.0}, step=0)
    logger.save()
    assert _rows(logger) == (["loss", "step"], [{"loss": "2.0", "step": "0"}])


def test_log_hyperparams_without_arguments_writes_the_yaml(tmp_path: Path):
    logger = CSVLogger(tmp_path, name=None)
    logger.log_hyperparams()
    assert os.listdir(tmp_path / "version_0") == ["hparams.yaml"]


def test_hparams_yaml_is_written(tmp_path: Path):
    logger = CSVLogger(tmp_path)
    trainer = Trainer(logger=logger, max_steps=1, limit_val_batches=0, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(LoggingModel(lr=0.3))
    with open(os.path.join(logger.log_dir, "hparams.yaml")) as f:
        assert yaml.safe_load(f) == {"lr": 0.3}


def test_versions_name_and_prefix(tmp_path: Path):
    (tmp_path / "exp" / "version_4").mkdir(parents=True)
    logger = CSVLogger(tmp_path, name="exp", prefix="train")
    assert logger.version == 5
    assert logger.log_dir == os.path.join(str(tmp_path), "exp", "version_5")
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.save()
    assert _rows(logger)[0] == ["step", "train-loss"]
    assert CSVLogger(tmp_path, name=None, version="mine").log_dir == os.path.join(str(tmp_path), "mine")


def test_invalid_flush_interval_is_rejected():
    with pytest.raises(ValueError, match="flush_logs_every_n_steps"):
        CSVLogger(".", flush_logs_every_n_steps=0)


def test_finalize_without_logging_creates_no_directory(tmp_path: Path):
    logger = CSVLogger(tmp_path)
    logger.finalize("success")
    assert not (tmp_path / "lightning_logs").exists()


def test_csv_is_the_default_logger_without_tensorboard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import sys

    from torchbolt.utilities.imports import module_available

    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    module_available.cache_clear()
    try:
        with pytest.warns(UserWarning, match="tensorboard"):
            trainer = Trainer(default_root_dir=tmp_path, max_steps=1, limit_val_batches=0, enable_progress_bar=False,
                              enable_model_summary=False, enable_checkpointing=False)
    finally:
        monkeypatch.undo()
        module_available.cache_clear()
    assert isinstance(trainer.logger, CSVLogger)
    trainer.fit(LoggingModel())
    assert trainer.log_dir == os.path.join(str(tmp_path), "lightning_logs", "version_0")
    assert os.path.isfile(os.path.join(trainer.log_dir, "metrics.csv"))


def test_unwritable_save_dir_fails_before_training(tmp_path: Path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    steps = []

    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            steps.append(batch_idx)
            return super().training_step(batch, batch_idx)

    trainer = Trainer(logger=CSVLogger(blocker / "logs"), max_steps=2, limit_val_batches=0,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    with pytest.raises(OSError):
        trainer.fit(Model())
    assert steps == []
