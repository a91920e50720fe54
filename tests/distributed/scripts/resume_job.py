"""A 2-rank job that can be interrupted and resumed (`python resume_job.py OUT MODE`).

MODE "first": an uninterrupted reference fit (OUT/ref), then the same fit (OUT/run) that sleeps at every
step, checkpoints every step when CKPT_EVERY_STEP=1, and waits to be killed or signalled.
MODE "again": the OUT/run fit once more, from CKPT_PATH (or, under SLURM, from its requeue checkpoint).
ASYNC_CKPT=1 writes every checkpoint in the background (`AsyncCheckpointIO`).
"""

from __future__ import annotations

import os
import sys
import time

import torch
from common import Regressor, trainer_kwargs, write_result

import torchbolt as pl
from torchbolt.plugins import AsyncCheckpointIO

OUT, MODE = sys.argv[1], sys.argv[2]


class Model(Regressor):
    def __init__(self, slow: bool) -> None:
        super().__init__(batch_size=2, shuffle=True, n=32)
        self.slow = slow

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        optimizer = torch.optim.Adam(self.parameters(), lr=0.01)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class SaveEveryStep(pl.Callback):
    """Saves before each batch, when the previous batch is fully accounted for."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # type: ignore[no-untyped-def]
        trainer.save_checkpoint(self.path)


class Progress(pl.Callback):
    """Marks how far training got (the test interrupts once it is far enough), slowly."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
        with open(os.path.join(OUT, f"step.rank{trainer.global_rank}"), "w") as f:
            f.write(f"{trainer.global_step} {os.getpid()}")
        time.sleep(0.25)


def fit(root: str, slow: bool, ckpt_path: str | None) -> pl.Trainer:
    pl.seed_everything(3)
    model = Model(slow)
    callbacks: list[pl.Callback] = [Progress()] if slow else []
    if slow and os.environ.get("CKPT_EVERY_STEP") == "1":
        callbacks.append(SaveEveryStep(os.path.join(root, "last.ckpt")))
    plugins = [AsyncCheckpointIO()] if os.environ.get("ASYNC_CKPT") == "1" else None
    trainer = pl.Trainer(**trainer_kwargs(devices=2, strategy="ddp", max_epochs=2, default_root_dir=root,
                                          callbacks=callbacks, plugins=plugins))
    trainer.fit(model, ckpt_path=ckpt_path)
    write_result(root, "final", trainer.global_rank, {"final": model.state_dict(), "step": trainer.global_step})
    return trainer


if __name__ == "__main__":
    run_dir = os.path.join(OUT, "run")
    if MODE == "first":
        fit(os.path.join(OUT, "ref"), slow=False, ckpt_path=None)
        fit(run_dir, slow=True, ckpt_path=None)
    else:
        fit(run_dir, slow=False, ckpt_path=os.environ.get("CKPT_PATH") or None)
