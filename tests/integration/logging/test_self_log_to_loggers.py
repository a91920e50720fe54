"""``self.log`` end to end: which keys reach the loggers, at which step, and torchmetrics objects."""

from __future__ import annotations

import csv
import os

import pytest
import torch

from torchbolt import Trainer
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.loggers import CSVLogger


def _rows(logger: CSVLogger) -> list[dict[str, str]]:
    with open(os.path.join(logger.log_dir, "metrics.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _steps(rows: list[dict[str, str]], key: str) -> list[int]:
    return [int(r["step"]) for r in rows if r.get(key)]


def _fit(tmp_path, model, **kwargs) -> tuple[Trainer, CSVLogger]:
    logger = CSVLogger(tmp_path)
    defaults = dict(logger=logger, max_epochs=1, limit_train_batches=4, limit_val_batches=2, log_every_n_steps=1,
                    enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                    default_root_dir=tmp_path)
    defaults.update(kwargs)
    trainer = Trainer(**defaults)
    trainer.fit(model)
    return trainer, logger


class StepEpochModel(BoringModel):
    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.log("loss", out["loss"], on_step=True, on_epoch=True, prog_bar=True)
        self.log("hidden", out["loss"], logger=False)
        return out

    def validation_step(self, batch, batch_idx):
        out = super().validation_step(batch, batch_idx)
        self.log("val_loss", out["x"])
        self.log("val_step_loss", out["x"], on_step=True, on_epoch=False)
        return out


def test_step_and_epoch_forks_reach_the_loggers(tmp_path):
    trainer, logger = _fit(tmp_path, StepEpochModel(), max_epochs=2)
    rows = _rows(logger)
    assert _steps(rows, "loss_step") == [0, 1, 2, 3, 4, 5, 6, 7]
    assert _steps(rows, "loss_epoch") == [3, 7]
    assert "loss" not in rows[0] and "hidden" not in rows[0]
    # the epoch value is the batch-size-weighted mean of the step values
    epoch0 = [float(r["loss_step"]) for r in rows if r["loss_step"] and r["epoch"] == "0"]
    assert float(next(r["loss_epoch"] for r in rows if r["loss_epoch"])) == pytest.approx(sum(epoch0) / 4)
    assert set(trainer.callback_metrics) >= {"loss", "loss_step", "loss_epoch", "hidden", "val_loss"}
    assert set(trainer.logged_metrics) >= {"loss_step", "loss_epoch", "val_loss"}
    assert "hidden" not in trainer.logged_metrics
    assert set(trainer.progress_bar_metrics) == {"loss_step", "loss_epoch"}


def test_validation_step_metrics_use_the_evaluation_batch_count_without_epoch(tmp_path):
    _, logger = _fit(tmp_path, StepEpochModel(), num_sanity_val_steps=0)
    rows = [r for r in _rows(logger) if r["val_step_loss"]]
    assert [int(r["step"]) for r in rows] == [0, 1]
    assert all(r["epoch"] == "" for r in rows)


def test_mid_epoch_validation_logs_at_the_step_it_ran(tmp_path):
    _, logger = _fit(tmp_path, StepEpochModel(), limit_train_batches=6, val_check_interval=0.5,
                     num_sanity_val_steps=0)
    rows = _rows(logger)
    # validation after batches 3 and 6: the steps of those batches (before their counter moved on)
    assert _steps(rows, "val_loss") == [2, 5]
    assert [r["epoch"] for r in rows if r["val_loss"]] == ["0", "0"]


def test_log_every_n_steps_counts_optimizer_steps_with_accumulation(tmp_path):
    _, logger = _fit(tmp_path, StepEpochModel(), limit_train_batches=8, accumulate_grad_batches=2,
                     log_every_n_steps=2, limit_val_batches=0)
    assert _steps(_rows(logger), "loss_step") == [1, 3]


def test_user_logged_step_replaces_the_x_axis(tmp_path):
    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            out = super().training_step(batch, batch_idx)
            self.log("loss", out["loss"])
            self.log("step", float(10 * (batch_idx + 1)))
            return out

    _, logger = _fit(tmp_path, Model(), limit_val_batches=0)
    rows = _rows(logger)
    assert _steps(rows, "loss") == [10, 20, 30, 40]
    assert "epoch" not in rows[0]  # Lightning adds "epoch" only on its own x-axis


def test_test_metrics_are_logged_after_fit_at_the_final_step(tmp_path):
    class Model(StepEpochModel):
        def test_step(self, batch, batch_idx):
            self.log("test_loss", self.step(batch))

    model = Model()
    trainer, logger = _fit(tmp_path, model)
    # with the model passed: without one, Lightning loads ckpt_path="best", which needs a ModelCheckpoint
    trainer.test(model, verbose=False)
    rows = _rows(logger)
    assert [(int(r["step"]), r["epoch"]) for r in rows if r["test_loss"]] == [(4, "1")]


torchmetrics = pytest.importorskip("torchmetrics", reason="the Metric tests need torchmetrics")


class MetricModel(BoringModel):
    def __init__(self) -> None:
        super().__init__()
        self.train_mean = torchmetrics.MeanMetric()
        self.val_max = torchmetrics.MaxMetric()
        self.collection = torchmetrics.MetricCollection(
            {"sum": torchmetrics.SumMetric(), "max": torchmetrics.MaxMetric()}, prefix="col_")

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        value = torch.tensor(float(batch_idx + 10 * self.current_epoch))
        self.train_mean(value)
        self.log("mean", self.train_mean, on_step=True, on_epoch=True)
        self.collection.update(value)
        self.log_dict(self.collection, on_step=False, on_epoch=True)
        return out

    def validation_step(self, batch, batch_idx):
        self.val_max.update(torch.tensor(float(batch_idx)))
        self.log("val_max", self.val_max)


def test_metric_objects_compute_at_epoch_end_and_reset(tmp_path):
    trainer, logger = _fit(tmp_path, MetricModel(), max_epochs=2, num_sanity_val_steps=0)
    rows = _rows(logger)
    epoch_rows = [r for r in rows if r["mean_epoch"]]
    # epoch 0 sees 0..3, epoch 1 sees 10..13: each epoch starts from a reset metric
    assert [float(r["mean_epoch"]) for r in epoch_rows] == [1.5, 11.5]
    assert [float(r["col_sum"]) for r in epoch_rows] == [6.0, 46.0]
    assert [float(r["col_max"]) for r in epoch_rows] == [3.0, 13.0]
    # the step value is what the metric's forward returned for that batch
    assert [float(r["mean_step"]) for r in rows if r["mean_step"]][:4] == [0.0, 1.0, 2.0, 3.0]
    assert [float(r["val_max"]) for r in rows if r["val_max"]] == [1.0, 1.0]
    assert trainer.callback_metrics["col_sum"].item() == 46.0


def test_metric_logged_in_one_epoch_only_is_not_recomputed_later(tmp_path):
    class Model(MetricModel):
        def training_step(self, batch, batch_idx):
            out = BoringModel.training_step(self, batch, batch_idx)
            if self.current_epoch == 0:
                self.train_mean.update(torch.tensor(1.0))
                self.log("mean", self.train_mean, on_step=False, on_epoch=True)
            return out

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchmetrics warns when compute() runs on a metric never updated
        _, logger = _fit(tmp_path, Model(), max_epochs=2, limit_val_batches=0)
    rows = _rows(logger)
    assert [float(r["mean"]) for r in rows if r.get("mean")] == [1.0]
