"""A 2-rank job for torchrun with restarts: `torchrun --nproc_per_node=2 --max-restarts=3 elastic_job.py OUT`.

OUT/ref: an uninterrupted fit (in the first attempt only). OUT/run: the same fit, with a checkpoint every 2
steps (`ModelCheckpoint` in the CSV logger's `version_<n>/checkpoints`, so every attempt writes to another
directory), in which rank 1 SIGKILLs itself at the start of step KILL_AT_STEP (default 5, mid-epoch 0) unless
OUT/killed exists (created just before, so only the first attempt dies). torchrun then restarts both ranks
and `trainer.fit(model)` (no `ckpt_path`) continues from the newest checkpoint of the run.

Each fit saves its final weights as `final.rank<r>.pt` and what it resumed from as `final.rank<r>.json`.
AUTO_RESUME=0 passes `TorchElasticEnvironment(auto_resume=False)`; ON_EXCEPTION=1 adds an `OnExceptionCheckpoint`.
"""

from __future__ import annotations

import os
import signal
import sys

import torch
from common import Regressor, trainer_kwargs, write_result

import torchbolt as pl
from torchbolt.callbacks import ModelCheckpoint, OnExceptionCheckpoint
from torchbolt.loggers import CSVLogger
from torchbolt.plugins.environments import TorchElasticEnvironment

OUT = sys.argv[1]
KILL_AT_STEP = int(os.environ.get("KILL_AT_STEP", "5"))
MARKER = os.path.join(OUT, "killed")


class Model(Regressor):
    def __init__(self) -> None:
        super().__init__(batch_size=2, shuffle=True, n=32)

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        optimizer = torch.optim.Adam(self.parameters(), lr=0.01)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class DieOnce(pl.Callback):
    """Rank 1 kills itself (no cleanup, no exception hooks) the first time it reaches ``KILL_AT_STEP``."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # type: ignore[no-untyped-def]
        if trainer.global_rank == 1 and trainer.global_step == KILL_AT_STEP and not os.path.exists(MARKER):
            open(MARKER, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)


def fit(root: str, die: bool) -> None:
    pl.seed_everything(3)
    model = Model()
    callbacks: list[pl.Callback] = [ModelCheckpoint(every_n_train_steps=2, save_last=True)]
    if die:
        callbacks.append(DieOnce())
    if os.environ.get("ON_EXCEPTION") == "1":
        callbacks.append(OnExceptionCheckpoint(os.path.join(root, "on_exception")))
    plugins = [TorchElasticEnvironment(auto_resume=False)] if os.environ.get("AUTO_RESUME") == "0" else None
    trainer = pl.Trainer(**trainer_kwargs(devices=2, strategy="ddp", max_epochs=2, default_root_dir=root,
                                          callbacks=callbacks, enable_checkpointing=True, plugins=plugins,
                                          logger=CSVLogger(root)))
    trainer.fit(model)
    rank = trainer.global_rank
    torch.save(model.state_dict(), os.path.join(root, f"final.rank{rank}.pt"))
    write_result(root, "final", rank, {"step": trainer.global_step, "ckpt_path": trainer.ckpt_path,
                                       "restart": TorchElasticEnvironment.restart_count()})


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    if not os.path.exists(os.path.join(OUT, "ref", "final.rank1.json")):
        fit(os.path.join(OUT, "ref"), die=False)
    fit(os.path.join(OUT, "run"), die=True)
