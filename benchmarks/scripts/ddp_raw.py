"""A hand-written data-parallel training loop (the reference of ``benchmarks/scaling.py``).

    WORLD_SIZE=2 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 python benchmarks/scripts/ddp_raw.py STEPS WARMUP &
    WORLD_SIZE=2 RANK=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 python benchmarks/scripts/ddp_raw.py STEPS WARMUP

With ``WORLD_SIZE`` 1 (or unset) it is a plain single-process loop, without a process group. Each process
trains the tiny 32-32-2 MLP on ``STEPS`` batches of 64 (its ``DistributedSampler`` share of
``STEPS * WORLD_SIZE`` pre-made batches; gloo all-reduces the gradients). Rank 0 prints
``RESULT <seconds from the end of step WARMUP to the end of the last step> <steps timed>``.
"""

import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from ddp_common import StepTimer, dataset
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler


def main() -> None:
    steps, warmup = int(sys.argv[1]), int(sys.argv[2])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    torch.manual_seed(0)
    data = dataset(steps * world)
    model: nn.Module = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)
        model = DistributedDataParallel(model)
        loader = DataLoader(data, batch_size=None, sampler=DistributedSampler(data, shuffle=False))
    else:
        loader = DataLoader(data, batch_size=None)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    timer = StepTimer(warmup)
    optimizer.register_step_post_hook(timer)
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if rank == 0:
        timer.report()
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
