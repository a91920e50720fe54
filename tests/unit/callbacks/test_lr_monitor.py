"""``LearningRateMonitor``: values in ``callback_metrics`` and in the logger, names, momentum, weight decay."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch

import torchbolt as pl
from torchbolt.callbacks import LearningRateMonitor
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.loggers import CSVLogger
from torchbolt.utilities.exceptions import MisconfigurationException


class StepScheduled(BoringModel):
    def __init__(self, interval: str = "step", optimizer: str = "sgd") -> None:
        super().__init__()
        self.interval = interval
        self.optimizer_name = optimizer

    def configure_optimizers(self) -> Any:
        if self.optimizer_name == "adam":
            optimizer: torch.optim.Optimizer = torch.optim.Adam(self.parameters(), lr=0.1, betas=(0.8, 0.99),
                                                                weight_decay=0.01)
        else:
            optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.5, weight_decay=0.02)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        return [optimizer], [{"scheduler": scheduler, "interval": self.interval}]


def fit(tmp_path: Path, model: pl.LightningModule, monitor: LearningRateMonitor, **kwargs: Any) -> pl.Trainer:
    options: dict[str, Any] = {"max_epochs": 2, "limit_train_batches": 3, "limit_val_batches": 0,
                               "log_every_n_steps": 1, "enable_checkpointing": False, "enable_progress_bar": False,
                               "enable_model_summary": False, "logger": CSVLogger(tmp_path, name="", version=0)}
    options.update(kwargs)
    trainer = pl.Trainer(callbacks=[monitor], **options)
    trainer.fit(model)
    return trainer


def logged(tmp_path: Path, key: str) -> list[tuple[int, float]]:
    with open(tmp_path / "version_0" / "metrics.csv") as f:
        return [(int(row["step"]), float(row[key])) for row in csv.DictReader(f) if row.get(key)]


def test_step_learning_rates_reach_the_logger_and_callback_metrics(tmp_path: Path) -> None:
    monitor = LearningRateMonitor()
    trainer = fit(tmp_path, StepScheduled("step"), monitor)
    assert logged(tmp_path, "lr-SGD") == [(i, 0.1 * 0.5 ** i) for i in range(6)]
    assert monitor.lrs["lr-SGD"] == [0.1 * 0.5 ** i for i in range(6)]
    assert trainer.callback_metrics["lr-SGD"].item() == pytest.approx(0.1 * 0.5 ** 5)


def test_epoch_scheduler_is_logged_once_per_epoch(tmp_path: Path) -> None:
    fit(tmp_path, StepScheduled("epoch"), LearningRateMonitor())
    assert logged(tmp_path, "lr-SGD") == [(0, 0.1), (3, 0.05)]


def test_logging_interval_step_logs_an_epoch_scheduler_at_every_step(tmp_path: Path) -> None:
    fit(tmp_path, StepScheduled("epoch"), LearningRateMonitor(logging_interval="step"))
    assert [v for _, v in logged(tmp_path, "lr-SGD")] == [0.1] * 3 + [0.05] * 3


def test_momentum_and_weight_decay_are_logged_when_asked(tmp_path: Path) -> None:
    trainer = fit(tmp_path, StepScheduled("step", "adam"), LearningRateMonitor(log_momentum=True,
                                                                                log_weight_decay=True))
    assert {v for _, v in logged(tmp_path, "lr-Adam-momentum")} == {0.8}  # betas[0]
    assert {v for _, v in logged(tmp_path, "lr-Adam-weight_decay")} == {0.01}
    assert trainer.callback_metrics["lr-Adam-momentum"].item() == pytest.approx(0.8)


def test_parameter_groups_and_named_schedulers_get_their_own_names(tmp_path: Path) -> None:
    class Groups(BoringModel):
        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.SGD([{"params": [self.layer.weight]}, {"params": [self.layer.bias], "lr": 0.3}],
                                        lr=0.1)
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
            return [optimizer], [{"scheduler": scheduler, "name": "my-lr"}]

    trainer = fit(tmp_path, Groups(), LearningRateMonitor(), max_epochs=1)
    assert {"my-lr/pg1", "my-lr/pg2"} <= set(trainer.callback_metrics)
    assert trainer.callback_metrics["my-lr/pg2"].item() == pytest.approx(0.3)


def test_without_a_logger_it_raises(tmp_path: Path) -> None:
    with pytest.raises(MisconfigurationException, match="Cannot use `LearningRateMonitor` callback with `Trainer`"
                                                        " that has no logger"):
        fit(tmp_path, StepScheduled(), LearningRateMonitor(), logger=False)


def test_an_unknown_logging_interval_raises() -> None:
    with pytest.raises(MisconfigurationException, match="logging_interval should be `step` or `epoch` or `None`"):
        LearningRateMonitor(logging_interval="batch")  # type: ignore[arg-type]


def test_an_optimizer_that_gains_a_parameter_group_moves_its_history_to_pg1(tmp_path: Path) -> None:
    class Unfreezes(BoringModel):
        def __init__(self) -> None:
            super().__init__()
            self.extra = torch.nn.Linear(32, 32)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.layer.parameters(), lr=0.1), torch.optim.Adam(self.layer.parameters())

        def training_step(self, batch: Any, batch_idx: int) -> None:
            for opt in self.optimizers():
                loss = self.step(batch)
                self.manual_backward(loss)
                opt.step()
                opt.zero_grad()

        def on_train_epoch_end(self) -> None:
            if self.current_epoch == 0:  # what a finetuning callback does when it unfreezes a backbone
                self.optimizers()[0].add_param_group({"params": self.extra.parameters(), "lr": 0.01})

    model = Unfreezes()
    model.automatic_optimization = False
    monitor = LearningRateMonitor(logging_interval="epoch")
    trainer = pl.Trainer(default_root_dir=tmp_path, max_epochs=3, limit_train_batches=1, limit_val_batches=0,
                         callbacks=[monitor], logger=CSVLogger(tmp_path), enable_progress_bar=False, log_every_n_steps=1,
                         enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(model)  # optimizers without schedulers are logged too
    assert list(monitor.lrs) == ["lr-Adam", "lr-SGD/pg1", "lr-SGD/pg2"]
    assert len(monitor.lrs["lr-SGD/pg1"]) == 3  # the history from before the rename is kept
    assert monitor.lrs["lr-SGD/pg2"] == [0.01, 0.01]
