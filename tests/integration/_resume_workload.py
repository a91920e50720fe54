"""A small training run with every source of randomness exact resume must reproduce.

Shared by the in-process resume tests and the SIGKILL launcher script: a dropout MLP, an LR
scheduler, a shuffled loader (optionally with worker processes) whose ``__getitem__`` draws from
torch, NumPy and ``random`` (a random augmentation), and validation that draws from the global
generator too.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

import torchbolt as pl
from torchbolt.callbacks import Checkpoint


class AugmentedData(Dataset):
    """Fixed points plus noise drawn in ``__getitem__`` from all three global generators."""

    def __init__(self, n: int = 32, features: int = 8) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, features, generator=g)
        self.y = (self.x.sum(1) > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn(self.x.shape[1]) * 0.1 + float(np.random.rand()) * 0.01 + random.random() * 0.01
        return self.x[i] + noise, self.y[i]


class ResumeModel(pl.LightningModule):
    def __init__(self, width: int = 16, workers: int = 0, scheduler_interval: str = "step", batch_size: int = 4,
                 n: int = 32) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Dropout(0.3), nn.Linear(width, 2))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.net(x), y))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        step_size = 3 if self.hparams.scheduler_interval == "step" else 1
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=0.7)
        return [optimizer], [{"scheduler": scheduler, "interval": self.hparams.scheduler_interval}]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(AugmentedData(self.hparams.n), batch_size=self.hparams.batch_size, shuffle=True,
                          num_workers=self.hparams.workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(AugmentedData(8), batch_size=4)


def seed(value: int = 1) -> None:
    torch.manual_seed(value)
    np.random.seed(value)
    random.seed(value)


def make_trainer(callbacks: list[Any] | None = None, **kwargs: Any) -> pl.Trainer:
    options: dict[str, Any] = {
        "max_epochs": 3, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
        "enable_model_summary": False, "deterministic": True, "num_sanity_val_steps": 1,
    }
    options.update(kwargs)
    if callbacks and any(isinstance(cb, Checkpoint) for cb in callbacks):
        options["enable_checkpointing"] = True
    return pl.Trainer(callbacks=callbacks or [], **options)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fit(model_kwargs: dict[str, Any], trainer_kwargs: dict[str, Any], callbacks: list[Any] | None = None,
        ckpt_path: str | None = None) -> tuple[dict[str, torch.Tensor], pl.Trainer]:
    """A fresh seeded model trained (or resumed from ``ckpt_path``) to the end; its final weights."""
    seed()
    model = ResumeModel(**model_kwargs)
    trainer = make_trainer(callbacks, **trainer_kwargs)
    trainer.fit(model, ckpt_path=ckpt_path)
    return weights(model), trainer


def first_difference(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> str | None:
    """The first parameter that differs (by bits), or ``None`` when all are identical."""
    if expected.keys() != got.keys():
        return f"keys differ: {sorted(expected)} vs {sorted(got)}"
    for key in expected:
        if not torch.equal(expected[key], got[key]):
            diff = (expected[key] - got[key]).abs().max().item()
            return f"{key} differs (max abs diff {diff})"
    return None
