"""Models, datamodules and callbacks that ``LightningCLI`` tests configure by name or ``class_path``."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.callbacks import Callback


def _data(n: int, features: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    return TensorDataset(x, (x.sum(dim=1) > 0).long())


class CLIModel(pl.LightningModule):
    """A tiny classifier; ``lr`` and ``hidden`` are the settings the tests change."""

    def __init__(self, hidden: int = 8, lr: float = 0.1, features: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, 2))

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
        return self(batch[0]).argmax(dim=1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class DeepCLIModel(CLIModel):
    """A subclass with an extra argument, chosen in subclass mode."""

    def __init__(self, depth: int = 2, hidden: int = 8, lr: float = 0.1, features: int = 4) -> None:
        super().__init__(hidden=hidden, lr=lr, features=features)
        self.depth = depth


class CLIDataModule(pl.LightningDataModule):
    """Random two-class data; ``batch_size`` and ``features`` are configurable."""

    def __init__(self, batch_size: int = 8, size: int = 32, features: int = 4) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.size = size
        self.features = features
        self.num_classes = 2

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_data(self.size, self.features, 0), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_data(16, self.features, 1), batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(_data(16, self.features, 2), batch_size=self.batch_size)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(_data(16, self.features, 3), batch_size=self.batch_size)


class OtherCLIDataModule(CLIDataModule):
    """A datamodule subclass with one more argument."""

    def __init__(self, noise: float = 0.0, batch_size: int = 8, size: int = 32, features: int = 4) -> None:
        super().__init__(batch_size=batch_size, size=size, features=features)
        self.noise = noise


class ClassesModel(CLIModel):
    """Takes ``num_classes`` from the datamodule through ``link_arguments(..., apply_on="instantiate")``."""

    def __init__(self, num_classes: int, hidden: int = 8, lr: float = 0.1, features: int = 4) -> None:
        super().__init__(hidden=hidden, lr=lr, features=features)
        self.num_classes = num_classes


class StageRecorder(Callback):
    """Records the stages it was set up for, under a configurable ``tag``."""

    def __init__(self, tag: str = "default") -> None:
        self.tag = tag
        self.stages: list[str] = []

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self.stages.append(stage)
