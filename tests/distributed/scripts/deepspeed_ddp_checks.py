"""DeepSpeed ZeRO stages 1 and 2 on two CPU processes over gloo, against plain DDP on the same data.

``python deepspeed_ddp_checks.py OUT``: for each of "ddp", "zero1" and "zero2", one 2-process fit of the same
model from the same seed (torchbolt starts the second process itself); each rank writes its final weights,
its step count and, for ZeRO, the size of the optimizer state it holds to OUT/<name>.rank<r>.json.
"""

from __future__ import annotations

import sys

import torch
from common import Regressor, trainer_kwargs, write_result

import torchbolt as pl
from torchbolt.strategies import DeepSpeedStrategy

OUT = sys.argv[1]


def fit(name: str, strategy: object) -> None:
    pl.seed_everything(5)
    model = Regressor(batch_size=4)
    trainer = pl.Trainer(**trainer_kwargs(devices=2, strategy=strategy, max_epochs=2, accumulate_grad_batches=2))
    trainer.fit(model)
    result = {"weights": {k: v.detach().cpu() for k, v in model.state_dict().items()},
              "step": trainer.global_step, "world_size": trainer.world_size}
    if name != "ddp":
        # ZeRO-1/2 partition the optimizer state: each rank keeps the flat fp32 partition of its half
        engine = trainer.strategy.deepspeed_engine
        partitions = engine.optimizer.single_partition_of_fp32_groups
        result["partition_numel"] = sum(p.numel() for p in partitions)
    write_result(OUT, name, trainer.global_rank, result)


if __name__ == "__main__":
    fit("ddp", "ddp")
    fit("zero1", DeepSpeedStrategy(stage=1))
    fit("zero2", DeepSpeedStrategy(stage=2))
    torch.distributed.barrier()
