"""Tiny models and data shared by the distributed test scripts and the single-process references."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import torchbolt as pl


class IndexedData(Dataset):
    """``n`` fixed samples ``(index, x, y)``; no randomness at access time."""

    def __init__(self, n: int = 32, features: int = 4, outputs: int = 2) -> None:
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, features, generator=g)
        self.y = torch.randn(n, outputs, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return torch.tensor(i), self.x[i], self.y[i]


class Regressor(pl.LightningModule):
    """``Linear(4, 2)`` (optionally with BatchNorm) on MSE, SGD; records what each rank saw."""

    def __init__(self, batch_size: int = 4, shuffle: bool = False, batchnorm: bool = False, lr: float = 0.1,
                 val_size: int = 0, n: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 2)) if batchnorm else nn.Linear(4, 2)
        self.batch_size, self.shuffle, self.lr, self.val_size, self.n = batch_size, shuffle, lr, val_size, n
        self.seen: dict[str, list[list[int]]] = {"train": [], "val": []}
        self.initial = {k: v.clone() for k, v in self.state_dict().items()}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        idx, x, y = batch
        if batch_idx == 0 or not self.seen["train"]:
            self.seen["train"].append([])
        self.seen["train"][-1].extend(idx.tolist())
        return nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        idx, _x, _y = batch
        if batch_idx == 0:
            self.seen["val"].append([])
        self.seen["val"][-1].extend(idx.tolist())
        # the mean of the sample indices over the whole (unpadded) validation set
        self.log("val_index_mean", idx.float().mean(), sync_dist=True, batch_size=len(idx))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(IndexedData(self.n), batch_size=self.batch_size, shuffle=self.shuffle)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(IndexedData(self.val_size), batch_size=self.batch_size)


def trainer_kwargs(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(accelerator=os.environ.get("CHECK_ACCELERATOR", "cpu"), max_epochs=1, enable_progress_bar=False,
                                  enable_model_summary=False, logger=False, enable_checkpointing=False,
                                  num_sanity_val_steps=0)
    kwargs.update(overrides)
    return kwargs


def to_plain(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def write_result(out_dir: str, name: str, rank: int, value: Any) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.rank{rank}.json"), "w") as f:
        json.dump(to_plain(value), f)


def read_results(out_dir: str, name: str, world_size: int = 2) -> list[Any]:
    results = []
    for rank in range(world_size):
        with open(os.path.join(out_dir, f"{name}.rank{rank}.json")) as f:
            results.append(json.load(f))
    return results


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)
