"""What ``ddp_raw.py`` and ``ddp_trainer.py`` share: the pre-made batches and the step timer."""

import time
from typing import Any

import torch
from torch.utils.data import TensorDataset


def dataset(batches: int) -> TensorDataset:
    """``batches`` pre-made batches of 64 (one dataset item is one batch: the loaders use ``batch_size=None``)."""
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(batches, 64, 32, generator=g)
    return TensorDataset(x, (x[..., 0] > 0).long())


class StepTimer:
    """An optimizer step post-hook: the time from the end of step ``warmup`` to the end of the last step."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.steps = 0
        self.start = 0.0
        self.end = 0.0

    def __call__(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.steps += 1
        self.end = time.perf_counter()
        if self.steps == self.warmup:
            self.start = self.end

    def report(self) -> None:
        print(f"RESULT {self.end - self.start} {self.steps - self.warmup}", flush=True)
