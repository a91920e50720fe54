"""Small models and a call-counting callback shared by tests."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.callbacks import Callback


def classification_data(n: int = 64, features: int = 8, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    y = (x.sum(dim=1) > 0).long()
    return TensorDataset(x, y)


def loader(n: int = 64, batch_size: int = 8, shuffle: bool = False, seed: int = 0, **kwargs: Any) -> DataLoader:
    return DataLoader(classification_data(n, seed=seed), batch_size=batch_size, shuffle=shuffle, **kwargs)


class ClassifierModule(pl.LightningModule):
    """A tiny MLP classifier logging train_loss, val_loss and test_loss."""

    def __init__(self, lr: float = 0.1, features: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(features, 16), nn.ReLU(), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("test_loss", F.cross_entropy(self(x), y))

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        x, _ = batch
        return self(x).argmax(dim=1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    def train_dataloader(self) -> DataLoader:
        return loader(shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return loader(32, seed=1)

    def test_dataloader(self) -> DataLoader:
        return loader(32, seed=2)

    def predict_dataloader(self) -> DataLoader:
        return loader(32, seed=3)


class Counting(Callback):
    """Counts hook calls and records the batch indices seen per stage."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.train_batches: list[tuple[int, int]] = []  # (epoch, batch_idx)
        self.val_runs: list[int] = []  # global_step at each validation run
        self.val_batches = 0
        self.test_batches = 0
        self.predict_batches = 0
        self.optimizer_steps = 0

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.train_batches.append((trainer.current_epoch, batch_idx))

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.val_runs.append(trainer.global_step)

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, *args: Any, **kwargs: Any) -> None:
        if not trainer.sanity_checking:
            self.val_batches += 1

    def on_sanity_check_start(self, trainer: Any, pl_module: Any) -> None:
        self.calls["sanity"] += 1

    def on_test_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self.test_batches += 1

    def on_predict_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self.predict_batches += 1

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        self.optimizer_steps += 1

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.calls["train_epoch_end"] += 1


def quiet_trainer(**kwargs: Any) -> pl.Trainer:
    """A Trainer without progress bar, summary, logger or checkpoints unless asked for."""
    defaults: dict[str, Any] = {
        "enable_progress_bar": False, "enable_model_summary": False, "logger": False,
        "enable_checkpointing": False, "max_epochs": 1,
    }
    defaults.update(kwargs)
    return pl.Trainer(**defaults)
