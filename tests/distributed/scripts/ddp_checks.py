"""Runs several DDP checks in one 2-process launch (`python ddp_checks.py OUT [phase ...]`, or under torchrun).

Each phase builds its own Trainer; results go to OUT/<phase>.rank<r>.json for the test to compare.
"""

from __future__ import annotations

import os
import sys

import torch
from common import IndexedData, Regressor, log, trainer_kwargs, write_result
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.utils.data import DataLoader

import torchbolt as pl
from torchbolt.strategies import DDPStrategy
from torchbolt.utilities.rank_zero import rank_zero_only

OUT = sys.argv[1]
PHASES = sys.argv[2:] or ["fit", "accumulate", "shuffle", "metrics", "collectives", "once"]


def phase_fit() -> None:
    # CHECK_DEVICES / CHECK_NODES let the same phase run as 2 nodes x 1 process
    devices, nodes = int(os.environ.get("CHECK_DEVICES", 2)), int(os.environ.get("CHECK_NODES", 1))
    pl.seed_everything(7)
    model = Regressor(batch_size=4)
    trainer = pl.Trainer(**trainer_kwargs(devices=devices, num_nodes=nodes, strategy="ddp"))
    trainer.fit(model)
    write_result(OUT, "fit", trainer.global_rank, {
        "initial": model.initial, "final": model.state_dict(), "seen": model.seen["train"],
        "world_size": trainer.world_size, "global_step": trainer.global_step,
        "env": type(trainer.strategy.cluster_environment).__name__, "node_rank": trainer.node_rank,
    })


def phase_accumulate() -> None:
    calls = {"n": 0}

    def counting_hook(state, bucket):  # type: ignore[no-untyped-def]  (DDP checks the annotations)
        calls["n"] += 1
        return allreduce_hook(None, bucket)  # type: ignore[arg-type]

    pl.seed_everything(7)
    model = Regressor(batch_size=4)
    trainer = pl.Trainer(**trainer_kwargs(devices=2, strategy=DDPStrategy(ddp_comm_hook=counting_hook),
                                          accumulate_grad_batches=2))
    trainer.fit(model)
    write_result(OUT, "accumulate", trainer.global_rank,
                 {"final": model.state_dict(), "allreduce_calls": calls["n"], "global_step": trainer.global_step})


class _ListCollate:
    """A user collate_fn the injected sampler must keep."""

    def __call__(self, items: list) -> tuple:
        idx, x, y = zip(*items)
        return torch.stack(idx), torch.stack(x), torch.stack(y)


def phase_shuffle() -> None:
    pl.seed_everything(7)
    model = Regressor(batch_size=3)
    loader = DataLoader(IndexedData(20), batch_size=3, shuffle=True, drop_last=True, collate_fn=_ListCollate())
    trainer = pl.Trainer(**trainer_kwargs(devices=2, strategy="ddp", max_epochs=2))
    trainer.fit(model, train_dataloaders=loader)
    used = trainer.train_dataloader
    write_result(OUT, "shuffle", trainer.global_rank, {
        "seen": model.seen["train"], "batch_size": used.batch_size, "drop_last": used.drop_last,
        "collate": type(used.collate_fn).__name__, "sampler": type(used.sampler).__name__,
        "num_batches": trainer.num_training_batches,
    })


class _Metrics(Regressor):
    def __init__(self) -> None:
        super().__init__(batch_size=2, val_size=11)
        import torchmetrics

        self.tm_sum = torchmetrics.SumMetric()

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        loss = super().training_step(batch, batch_idx)
        rank = self.global_rank
        self.log("rank_mean", float(rank + 1), sync_dist=True, on_step=False, on_epoch=True)
        self.log("rank_max", float(rank + 1), sync_dist=True, reduce_fx="max", on_step=False, on_epoch=True)
        self.log("rank_sum", float(rank + 1), sync_dist=True, reduce_fx="sum", on_step=False, on_epoch=True)
        self.log("rank_step", float(rank + 1), sync_dist=True, on_step=True, on_epoch=False)
        self.log("rank_unsynced", float(rank + 1), on_step=False, on_epoch=True)
        self.tm_sum.update(torch.tensor(float(rank + 1)))
        self.log("tm_sum", self.tm_sum, on_step=False, on_epoch=True)
        return loss


def phase_metrics() -> None:
    pl.seed_everything(7)
    model = _Metrics()
    trainer = pl.Trainer(**trainer_kwargs(devices=2, strategy="ddp", limit_train_batches=3))
    trainer.fit(model)
    write_result(OUT, "metrics", trainer.global_rank, {
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()}, "val_seen": model.seen["val"]})


class _Collectives(Regressor):
    def on_train_end(self) -> None:
        rank = self.global_rank
        strategy = self.trainer.strategy
        self.results = {
            "all_gather": self.all_gather(torch.tensor([rank, 10 + rank])),
            "all_gather_uneven": [t.tolist() for t in self.all_gather(torch.arange(rank + 1))],
            "reduce_sum": strategy.reduce(torch.tensor(float(rank + 1)), reduce_op="sum"),
            "reduce_mean": strategy.reduce(torch.tensor(float(rank + 1))),
            "reduce_max": strategy.reduce(torch.tensor(float(rank + 1)), reduce_op="max"),
            "broadcast": strategy.broadcast({"from": rank}, src=0),
            "any": strategy.reduce_boolean_decision(rank == 1, all=False),
            "all": strategy.reduce_boolean_decision(rank == 1, all=True),
            "rank_zero_only_rank": rank_zero_only.rank,
            "is_global_zero": self.trainer.is_global_zero,
            "local_rank": self.trainer.local_rank,
            "node_rank": self.trainer.node_rank,
        }
        strategy.barrier("test")


def phase_collectives() -> None:
    model = _Collectives()
    trainer = pl.Trainer(**trainer_kwargs(devices=2, strategy="ddp", limit_train_batches=1))
    trainer.fit(model)
    write_result(OUT, "collectives", trainer.global_rank, model.results)


class _PrepareOnce(Regressor):
    def prepare_data(self) -> None:
        with open(os.path.join(OUT, f"prepare_data.{os.getpid()}"), "w") as f:
            f.write(str(self.global_rank))


def phase_once() -> None:
    model = _PrepareOnce()
    trainer = pl.Trainer(**trainer_kwargs(devices=2, strategy="ddp", limit_train_batches=1, enable_progress_bar=True))
    trainer.fit(model)
    trainer.save_checkpoint(os.path.join(OUT, f"saved_by_rank{trainer.global_rank}.ckpt"))
    trainer.save_checkpoint(os.path.join(OUT, "shared.ckpt"))
    write_result(OUT, "once", trainer.global_rank, {"progress_bar": trainer.progress_bar_callback.is_enabled})


class _BN(Regressor):
    def on_train_start(self) -> None:
        self.kind_during_fit = type(self.net[0]).__name__


def phase_batchnorm() -> None:
    pl.seed_everything(7)
    model = _BN(batch_size=4, batchnorm=True)
    devices = int(os.environ.get("CHECK_DEVICES", 2))
    trainer = pl.Trainer(**trainer_kwargs(devices=devices, strategy="ddp", sync_batchnorm=True, limit_train_batches=2))
    trainer.fit(model)
    write_result(OUT, "batchnorm", trainer.global_rank, {
        "during": model.kind_during_fit, "after": type(model.net[0]).__name__, "final": model.state_dict()})


if __name__ == "__main__":
    for name in PHASES:
        log(f"[ddp_checks] phase {name}")
        globals()[f"phase_{name}"]()
