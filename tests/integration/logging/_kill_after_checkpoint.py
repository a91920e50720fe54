"""A fit that writes a checkpoint after a chosen batch and then SIGKILLs its own process.

Run by ``test_logger_flushes.py``:

    python _kill_after_checkpoint.py LOG_DIR CKPT_PATH KILL_AFTER_BATCH

Logs with a ``CSVLogger`` (``LOG_DIR/csv/metrics.csv``) and a ``TensorBoardLogger`` (``LOG_DIR/tb``),
every step, so what is on disk after the kill shows which rows reached storage before the checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from _resume_workload import ResumeModel, make_trainer, seed

from torchbolt.callbacks import Callback
from torchbolt.loggers import CSVLogger, TensorBoardLogger


class CheckpointThenKill(Callback):
    def __init__(self, path: str, after_batch: int) -> None:
        self.path = path
        self.after_batch = after_batch
        self.batches = 0

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.batches += 1
        if self.batches == self.after_batch:
            trainer.save_checkpoint(self.path)
            os.kill(os.getpid(), signal.SIGKILL)


def loggers(log_dir: str) -> list[Any]:
    return [CSVLogger(log_dir, name="csv", version=0), TensorBoardLogger(log_dir, name="tb", version=0)]


def main() -> None:
    log_dir, ckpt_path, after_batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seed()
    trainer = make_trainer([CheckpointThenKill(ckpt_path, after_batch)], max_epochs=2, logger=loggers(log_dir),
                           log_every_n_steps=1)
    trainer.fit(ResumeModel())
    raise SystemExit("the fit ended without being killed")


if __name__ == "__main__":
    main()
