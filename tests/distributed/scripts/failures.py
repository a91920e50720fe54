"""Jobs that fail on purpose (`python failures.py OUT MODE`): a rank raising, a rank to be killed, uneven data."""

from __future__ import annotations

import os
import sys
import time

import torch
from common import IndexedData, Regressor, trainer_kwargs, write_result
from torch.utils.data import DataLoader, IterableDataset

import torchbolt as pl
from torchbolt.utilities.exceptions import MisconfigurationException

OUT, MODE = sys.argv[1], sys.argv[2]


class Failing(Regressor):
    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        if MODE in ("raise", "raise_spawn") and self.global_rank == 1 and batch_idx == 2:
            raise ValueError("boom from rank 1")
        if MODE == "wait_for_kill":
            if batch_idx == 2:
                with open(os.path.join(OUT, f"pid.rank{self.global_rank}"), "w") as f:
                    f.write(str(os.getpid()))
            time.sleep(0.2)
        return super().training_step(batch, batch_idx)


class _Stream(IterableDataset):
    """A different number of samples on each rank, without a length."""

    def __init__(self, count: int) -> None:
        self.data = IndexedData(count)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return (self.data[i] for i in range(len(self.data)))


def main() -> None:
    rank = int(os.environ.get("LOCAL_RANK", 0))
    model = Failing(batch_size=2, n=400)
    kwargs = trainer_kwargs(devices=2, strategy="ddp_spawn" if MODE == "raise_spawn" else "ddp")
    if MODE == "uneven":
        # data without a length, a different amount on each rank: every rank stops with the shortest
        loader = DataLoader(_Stream(8 if rank == 0 else 6), batch_size=2)
        trainer = pl.Trainer(**kwargs)
        trainer.fit(model, train_dataloaders=loader)
        result = {"global_step": trainer.global_step, "seen": model.seen["train"]}
        # each rank its own, differently sized data with a length (4 batches vs 3): a clear error on every rank
        loader = DataLoader(IndexedData(8 if rank == 0 else 6), batch_size=2)
        try:
            pl.Trainer(**kwargs, use_distributed_sampler=False).fit(Failing(batch_size=2), train_dataloaders=loader)
        except MisconfigurationException as e:
            result["error"] = str(e)
        write_result(OUT, "uneven", trainer.global_rank, result)
    elif MODE == "raise_spawn":
        pl.Trainer(**kwargs).fit(model)  # the ranks run in spawned processes: this process has no group
        return
    else:
        pl.Trainer(**kwargs).fit(model)
    torch.distributed.barrier()


if __name__ == "__main__":
    main()
