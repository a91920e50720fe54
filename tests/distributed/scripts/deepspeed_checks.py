"""DeepSpeed ZeRO stages 2 and 3 with world size 1 (`python deepspeed_checks.py OUT`): fit, save, resume, convert."""

from __future__ import annotations

import os
import sys

import torch
from common import Regressor, trainer_kwargs, write_result

import torchbolt as pl
from torchbolt.strategies import DeepSpeedStrategy
from torchbolt.strategies.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

OUT = sys.argv[1]


def fit(stage: int, epochs: int, ckpt_path: str | None = None) -> tuple[pl.Trainer, Regressor]:
    pl.seed_everything(11)
    model = Regressor(batch_size=4)
    trainer = pl.Trainer(**trainer_kwargs(devices=1, strategy=DeepSpeedStrategy(stage=stage), max_epochs=epochs,
                                          accumulate_grad_batches=2))
    trainer.fit(model, ckpt_path=ckpt_path)
    return trainer, model


def weights(trainer: pl.Trainer, model: Regressor) -> dict:
    # stage 3 keeps only shards in the module; gather the full values
    from deepspeed.runtime.zero import GatheredParameters

    with GatheredParameters(list(model.parameters())):
        return {k: v.detach().clone() for k, v in model.state_dict().items()}


if __name__ == "__main__":
    for stage in (2, 3):
        trainer, model = fit(stage, epochs=2)
        write_result(OUT, f"uninterrupted_{stage}", 0, {"weights": weights(trainer, model),
                                                         "step": trainer.global_step})
        trainer, model = fit(stage, epochs=1)
        path = os.path.join(OUT, f"stage{stage}.ckpt")
        trainer.save_checkpoint(path)
        converted = convert_zero_checkpoint_to_fp32_state_dict(path, os.path.join(OUT, f"stage{stage}.fp32.ckpt"))
        write_result(OUT, f"one_epoch_{stage}", 0, {"weights": weights(trainer, model),
                                                     "converted": converted["state_dict"]})
        trainer, model = fit(stage, epochs=2, ckpt_path=path)
        write_result(OUT, f"resumed_{stage}", 0, {"weights": weights(trainer, model), "step": trainer.global_step})
    torch.distributed.barrier()
