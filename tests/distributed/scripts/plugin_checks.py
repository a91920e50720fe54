"""Plug-ins under real gloo process groups (`python plugin_checks.py OUT MODE`).

MODE "sharded": 2-rank FSDP fit that saves a sharded checkpoint directory and the full weights.
MODE "layer_sync": 2-rank DDP fits with a user `LayerSync` (BatchNorm statistics all-reduced over gloo),
then `TorchSyncBatchNorm` converting and reverting the trained model inside the process group.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from common import IndexedData, Regressor, trainer_kwargs, write_result
from torch import nn
from torch.utils.data import DataLoader

import torchbolt as pl
from torchbolt.plugins import LayerSync, TorchSyncBatchNorm
from torchbolt.strategies import FSDPStrategy


class ShardedNet(Regressor):
    """Two Linear layers, each its own FSDP unit; Adam (so the checkpoint has optimizer state)."""

    def __init__(self) -> None:
        super().__init__(batch_size=4)
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.01)


class _AllReduceBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics are computed over all ranks (gloo all-reduce, autograd-aware)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        import torch.distributed.nn.functional as dist_fn

        c = x.shape[1]
        local = torch.cat([x.sum(0), (x * x).sum(0), torch.tensor([float(x.shape[0])])])
        total = dist_fn.all_reduce(local)
        count = total[-1]
        mean = total[:c] / count
        var = total[c:2 * c] / count - mean * mean
        with torch.no_grad():
            m = float(self.momentum or 0.1)
            self.running_mean.mul_(1 - m).add_(m * mean)
            self.running_var.mul_(1 - m).add_(m * var * count / (count - 1))
            self.num_batches_tracked.add_(1)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


class AllReduceBatchNorm(LayerSync):
    """A `LayerSync` that works on CPU: BatchNorm1d -> `_AllReduceBatchNorm1d` and back."""

    def apply(self, model: nn.Module) -> nn.Module:
        return _swap(model, nn.BatchNorm1d, _AllReduceBatchNorm1d)

    def revert(self, model: nn.Module) -> nn.Module:
        return _swap(model, _AllReduceBatchNorm1d, nn.BatchNorm1d)


def _swap(model: nn.Module, old: type[nn.BatchNorm1d], new: type[nn.BatchNorm1d]) -> nn.Module:
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is old:
                replacement = new(child.num_features, child.eps, child.momentum)
                replacement.load_state_dict(child.state_dict())
                replacement.train(child.training)
                setattr(parent, name, replacement)
    return model


class _BN(Regressor):
    def on_train_start(self) -> None:
        self.kind_during_fit = type(self.net[0]).__name__


def _bn_stats(model: Regressor) -> dict:
    bn = model.net[0]
    return {"mean": bn.running_mean, "var": bn.running_var, "batches": bn.num_batches_tracked}


def phase_layer_sync(out: str) -> None:
    results = {}
    for name, plugins in (("synced", [AllReduceBatchNorm()]), ("local", None)):
        pl.seed_everything(7)
        model = _BN(batch_size=4, batchnorm=True)
        trainer = pl.Trainer(**trainer_kwargs(devices=2, strategy="ddp", plugins=plugins, limit_train_batches=4))
        trainer.fit(model)
        results[name] = {"during": model.kind_during_fit, "after": type(model.net[0]).__name__, **_bn_stats(model)}
    # torch's SyncBatchNorm inside the live process group: conversion, an eval forward (no sync), revert
    model.eval()
    x = IndexedData(8).x
    before = model.net(x)
    plugin = TorchSyncBatchNorm()
    plugin.apply(model)
    converted = type(model.net[0]).__name__
    after_convert = model.net(x)
    plugin.revert(model)
    results["torch"] = {"converted": converted, "reverted": type(model.net[0]).__name__,
                        "same_output": bool(torch.equal(before, after_convert)),
                        "world_size": dist.get_world_size()}
    write_result(out, "layer_sync", trainer.global_rank, results)


def phase_sharded(out: str) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    pl.seed_everything(5)
    model = ShardedNet()
    strategy = FSDPStrategy(auto_wrap_policy={nn.Linear}, state_dict_type="sharded")
    trainer = pl.Trainer(**trainer_kwargs(devices=2, strategy=strategy, limit_train_batches=3))
    trainer.fit(model, train_dataloaders=DataLoader(IndexedData(32), batch_size=4))
    trainer.save_checkpoint(os.path.join(out, "sharded.ckpt"))
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    write_result(out, "sharded", trainer.global_rank, {"weights": full, "step": trainer.global_step})


if __name__ == "__main__":
    globals()[f"phase_{sys.argv[2]}"](sys.argv[1])
