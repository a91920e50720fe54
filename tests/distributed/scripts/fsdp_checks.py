"""FSDP2 on CPU (`python fsdp_checks.py OUT MODE`).

MODE "two_ranks": fits with full and sharded checkpoints, resumes from each; MODE "one_rank": loads the
2-rank sharded checkpoint into a single rank.
"""

from __future__ import annotations

import os
import sys

import torch
from common import IndexedData, Regressor, trainer_kwargs, write_result
from torch import nn
from torch.utils.data import DataLoader

import torchbolt as pl
from torchbolt.strategies import FSDPStrategy


class Net(Regressor):
    """Two Linear blocks (each its own FSDP unit, activations recomputed), Adam."""

    def __init__(self) -> None:
        super().__init__(batch_size=4)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.01)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(IndexedData(32), batch_size=self.batch_size)


def strategy(state_dict_type: str) -> FSDPStrategy:
    return FSDPStrategy(auto_wrap_policy={nn.Linear}, activation_checkpointing_policy={nn.Linear},
                        cpu_offload=True, state_dict_type=state_dict_type)  # type: ignore[arg-type]


def full_state(trainer: pl.Trainer, model: Net) -> dict:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights, optim = get_state_dict(model, trainer.strategy.optimizers[0], options=opts)
    return {"weights": weights, "exp_avg": {k: v["exp_avg"] for k, v in optim.get("state", {}).items()}}


def fit(state_dict_type: str, epochs: int, ckpt_path: str | None = None, devices: int = 2) -> tuple:
    pl.seed_everything(5)
    model = Net()
    trainer = pl.Trainer(**trainer_kwargs(devices=devices, strategy=strategy(state_dict_type), max_epochs=epochs))
    trainer.fit(model, ckpt_path=ckpt_path)
    return trainer, model


if __name__ == "__main__":
    OUT, MODE = sys.argv[1], sys.argv[2]
    if MODE == "two_ranks":
        trainer, model = fit("full", epochs=2)
        rank = trainer.global_rank
        write_result(OUT, "uninterrupted", rank, full_state(trainer, model))
        for kind in ("full", "sharded"):
            trainer, model = fit(kind, epochs=1)
            path = os.path.join(OUT, f"{kind}.ckpt")
            trainer.save_checkpoint(path)
            write_result(OUT, f"after_one_epoch_{kind}", rank, full_state(trainer, model))
            trainer, model = fit(kind, epochs=2, ckpt_path=path)
            write_result(OUT, f"resumed_{kind}", rank, {**full_state(trainer, model), "step": trainer.global_step})
    else:
        trainer, model = fit("sharded", epochs=1, ckpt_path=os.path.join(OUT, "sharded.ckpt"), devices=1)
        write_result(OUT, "one_rank", 0, {**full_state(trainer, model), "step": trainer.global_step,
                                          "world_size": trainer.world_size})
