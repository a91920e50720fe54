"""A 2-rank job whose ranks draw different random numbers, killed mid-epoch and resumed.

    python rank_rng_resume_job.py OUT MODE

Each rank seeds its generators with its rank in `setup` (dropout masks and a random augmentation
differ between ranks), and logs a torchmetrics mean (synchronized across ranks when computed) on epoch.

LOADER=stateful: the training loader is torchdata's StatefulDataLoader instead of a DataLoader;
LOADER=iterable: a DataLoader over an IterableDataset (one shard per rank) with state_dict/load_state_dict.

MODE "first": an uninterrupted reference fit (OUT/ref), then the same fit (OUT/run) with a checkpoint every
3 steps that SIGKILLs every rank at the start of step KILL_AT_STEP (default 5; mid-epoch 0).
MODE "again": the OUT/run fit once more, with `ckpt_path="last"`.
MODE "one-process": the OUT/run fit resumed from CKPT_PATH by a single process (into OUT/one-process).
"""

from __future__ import annotations

import os
import random
import signal
import sys
from typing import Any

import numpy as np
import torch
import torchmetrics
from common import IndexedData, trainer_kwargs, write_result
from torch import nn
from torch.utils.data import DataLoader

import torchbolt as pl
from torchbolt.callbacks import ModelCheckpoint

OUT, MODE = sys.argv[1], sys.argv[2]
KILL_AT_STEP = int(os.environ.get("KILL_AT_STEP", "5"))


class RankNoiseModel(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2))
        self.loss_mean = torchmetrics.MeanMetric()

    def setup(self, stage: str) -> None:
        # every rank its own stream: dropout masks and the augmentation below differ between ranks
        seed = 100 + self.global_rank
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        _, x, y = batch
        x = x + torch.randn_like(x) * 0.1 + float(np.random.rand()) * 0.01 + random.random() * 0.01
        loss = nn.functional.mse_loss(self.net(x), y)
        self.loss_mean.update(loss.detach())
        self.log("loss_mean", self.loss_mean, on_step=False, on_epoch=True)
        self.log("loss_sync", loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    def train_dataloader(self) -> DataLoader:
        if os.environ.get("LOADER") == "stateful":
            from torchdata.stateful_dataloader import StatefulDataLoader

            return StatefulDataLoader(IndexedData(32), batch_size=2, shuffle=True)
        if os.environ.get("LOADER") == "iterable":
            return DataLoader(RankStream(self.global_rank, self.trainer.world_size), batch_size=2)
        return DataLoader(IndexedData(32), batch_size=2, shuffle=True)


class RankStream(torch.utils.data.IterableDataset):
    """This rank's half of ``IndexedData(32)`` without a length, in an order drawn per pass from its own
    generator; ``state_dict``/``load_state_dict`` hold the position, and iterating after a load continues there."""

    def __init__(self, rank: int, world_size: int) -> None:
        self.data = IndexedData(32)
        self.indices = list(range(rank, 32, world_size))
        self.generator = torch.Generator().manual_seed(11 + rank)
        self.order: list[int] = []
        self.position = 0
        self._continue = False

    def __iter__(self) -> Any:
        if not self._continue or self.position >= len(self.order):
            self.order = [self.indices[i] for i in torch.randperm(len(self.indices), generator=self.generator)]
            self.position = 0
        self._continue = False
        while self.position < len(self.order):
            self.position += 1
            yield self.data[self.order[self.position - 1]]

    def state_dict(self) -> dict[str, Any]:
        return {"order": list(self.order), "position": self.position, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order, self.position = list(state["order"]), int(state["position"])
        self.generator.set_state(state["generator"])
        self._continue = True


class Record(pl.Callback):
    """Each finished epoch's epoch-level metrics; kills the process at a chosen step when asked."""

    def __init__(self, kill_at: int | None) -> None:
        self.kill_at = kill_at
        self.epochs: list[dict[str, float]] = []

    def _record(self, trainer: pl.Trainer) -> None:
        self.epochs.append({k: v.item() for k, v in trainer.callback_metrics.items()})

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch > 0:
            self._record(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(trainer)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.kill_at is not None and trainer.global_step == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


def fit(root: str, kill_at: int | None, ckpt_path: str | None, devices: int = 2) -> None:
    pl.seed_everything(3)
    model = RankNoiseModel()
    record = Record(kill_at)
    checkpoint = ModelCheckpoint(dirpath=os.path.join(root, "ckpts"), every_n_train_steps=3, save_last=True)
    strategy = "ddp" if devices > 1 else "auto"
    trainer = pl.Trainer(**trainer_kwargs(devices=devices, strategy=strategy, max_epochs=2, default_root_dir=root,
                                          callbacks=[record, checkpoint], enable_checkpointing=True))
    trainer.fit(model, ckpt_path=ckpt_path)
    write_result(root, "final" if devices > 1 else "one-process", trainer.global_rank, {
        "final": model.state_dict(), "step": trainer.global_step, "epochs": record.epochs,
        "ckpt_path": trainer.ckpt_path})


if __name__ == "__main__":
    run_dir = os.path.join(OUT, "run")
    if MODE == "first":
        fit(os.path.join(OUT, "ref"), kill_at=None, ckpt_path=None)
        fit(run_dir, kill_at=KILL_AT_STEP, ckpt_path=None)
    elif MODE == "again":
        fit(run_dir, kill_at=None, ckpt_path="last")
    else:
        fit(os.path.join(OUT, "one-process"), kill_at=None, ckpt_path=os.environ["CKPT_PATH"], devices=1)
