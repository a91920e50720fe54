"""One rank of a 2-process gloo run: only rank 1 sees a NaN loss at its batch 3; the guard must skip on both.

The strategy is the single-device one with its boolean decision reduced over a real gloo process
group (what a distributed strategy does); each rank trains its own replica on the same data.
Usage: nonfinite_guard_rank.py RANK WORLD_SIZE INIT_FILE OUT_JSON
"""

import json
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.callbacks import NonFiniteGuard
from torchbolt.strategies import SingleDeviceStrategy
from torchbolt.utilities.distributed import close_process_groups


class GlooDecisions(SingleDeviceStrategy):
    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        flag = torch.tensor(int(decision))
        dist.all_reduce(flag, op=dist.ReduceOp.SUM)
        return bool(flag == dist.get_world_size()) if all else bool(flag > 0)


class Model(pl.LightningModule):
    def __init__(self, nan_batch: int | None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(4, 1)
        self.nan_batch = nan_batch

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        if batch_idx == self.nan_batch:
            loss = loss * float("nan")
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(32, 4, generator=g)
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)


if __name__ == "__main__":
    rank, world_size, init_file, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    guard = NonFiniteGuard()
    model = Model(nan_batch=3 if rank == 1 else None)
    trainer = pl.Trainer(strategy=GlooDecisions("cpu"), max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[guard])
    trainer.fit(model)
    weights = [p.detach().flatten().tolist() for p in model.parameters()]
    with open(out, "w") as f:
        json.dump({"skipped": guard.skipped_steps, "weights": weights}, f)
    # leave together: a rank tearing gloo down while its peer is still connected can abort the peer at exit;
    # then destroy the group and let gloo's threads drop their last tensors while Python still runs (a bare
    # `destroy_process_group()` left one rank aborting with SIGABRT at exit, now and then)
    dist.barrier()
    close_process_groups()
