"""Per-step cost of the progress display on a tiny MLP (32-32-2, batch 8, 2000 steps, one epoch).

    python benchmarks/progress_bar.py              # 9 rounds of every configuration, medians
    python benchmarks/progress_bar.py --rounds 15

Every configuration trains the same model on the same pre-made batches with ``Trainer`` defaults except
``logger=False`` and ``enable_checkpointing=False``; the bar's output goes to a temporary file. A
``prog_bar=True`` metric is logged every step, so a redraw has something to convert. The configurations
run alternately (one of each per round), so a busy moment of the machine hits all of them alike; the
time is measured from ``on_train_start`` to ``on_train_end`` (the per-step work only). "extra" is the
median over rounds of the difference to the same round's run without a bar. "bar hook" is the time
inside the bar's ``on_train_batch_end``: its mean per step (redraws included) and its median call (a
step without a redraw); a busy machine disturbs these far less than the totals. "Python calls/step" is
counted with cProfile over one more fit per configuration, and does not depend on the machine's load.

Configurations:

- ``no bar``: ``enable_progress_bar=False``.
- ``default, to a file``: the default bar, as a SLURM or CI log gets it.
- ``default, bar forced``: the default bar with ``TORCHBOLT_PROGRESS=bar`` (what a terminal gets).
- ``refresh_rate=1``: ``TQDMProgressBar(refresh_rate=1)`` with the bar forced: a redraw every batch.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's torchbolt

import torch
import torch.nn.functional as F
from torch import nn

import torchbolt as pl
from torchbolt.callbacks import Callback, TQDMProgressBar

STEPS = 2000


class TinyMLP(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Batches:
    """Pre-made batches as one sized iterable (a list would mean several dataloaders)."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.batches)


class TrainTimer(Callback):
    """Wall time from the first to the last training batch (no per-step hook of its own)."""

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = time.process_time() - self.cpu_start


@contextlib.contextmanager
def _to_file(env: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with tempfile.TemporaryFile("w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run(data: Batches, callbacks: Callable[[], list[Callback]], bar: bool,
         env: dict[str, str]) -> tuple[float, float, float, float]:
    """(wall us/step, process CPU us/step, mean and median us per call of the bar's ``on_train_batch_end``)."""
    torch.manual_seed(0)
    model = TinyMLP()
    timer = TrainTimer()
    with _to_file(env):
        trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=bar,
                             callbacks=[timer, *callbacks()])
        spent = _time_batch_end(trainer.progress_bar_callback)
        trainer.fit(model, data)
    assert trainer.global_step == STEPS
    hook_mean = sum(spent) / STEPS * 1e6
    hook_median = statistics.median(spent) * 1e6 if spent else 0.0
    return timer.seconds / STEPS * 1e6, timer.cpu_seconds / STEPS * 1e6, hook_mean, hook_median


def _time_batch_end(bar: Callback | None) -> list[float]:
    """Record the wall time of every call of the bar's ``on_train_batch_end`` (the bar's per-step cost)."""
    spent: list[float] = []
    if bar is None:
        return spent
    hook = bar.on_train_batch_end

    def timed(*args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        hook(*args, **kwargs)
        spent.append(time.perf_counter() - start)

    bar.on_train_batch_end = timed  # type: ignore[method-assign]
    return spent


CONFIGS: dict[str, tuple[Callable[[], list[Callback]], bool, dict[str, str]]] = {
    "no bar": (list, False, {}),
    "default, to a file": (list, True, {"TORCHBOLT_PROGRESS": "auto"}),
    "default, bar forced": (list, True, {"TORCHBOLT_PROGRESS": "bar"}),
    "refresh_rate=1": (lambda: [TQDMProgressBar(refresh_rate=1)], True, {"TORCHBOLT_PROGRESS": "bar"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    data = Batches([(torch.randn(8, 32, generator=g), torch.randint(0, 2, (8,), generator=g)) for _ in range(STEPS)])
    wall: dict[str, list[float]] = {name: [] for name in CONFIGS}
    cpu: dict[str, list[float]] = {name: [] for name in CONFIGS}
    hook: dict[str, list[float]] = {name: [] for name in CONFIGS}
    hook_median: dict[str, list[float]] = {name: [] for name in CONFIGS}
    _run(data, *CONFIGS["no bar"])  # warm-up
    for _ in range(args.rounds):
        for name, config in CONFIGS.items():
            w, c, h, hm = _run(data, *config)
            wall[name].append(w)
            cpu[name].append(c)
            hook[name].append(h)
            hook_median[name].append(hm)
    calls = {name: _calls_per_step(data, *config) for name, config in CONFIGS.items()}
    print(f"torch threads 1, {STEPS} steps x {args.rounds} rounds; medians; extra = median of paired differences")
    print("| configuration | wall us/step | extra (wall) | CPU us/step | extra (CPU) | bar hook us/step: mean |"
          " median | Python calls/step |")
    print("|---|---|---|---|---|---|---|---|")
    for name in CONFIGS:
        extra_wall = statistics.median(a - b for a, b in zip(wall[name], wall["no bar"]))
        extra_cpu = statistics.median(a - b for a, b in zip(cpu[name], cpu["no bar"]))
        print(f"| {name} | {statistics.median(wall[name]):.0f} | {extra_wall:+.0f} |"
              f" {statistics.median(cpu[name]):.0f} | {extra_cpu:+.0f} | {statistics.median(hook[name]):.2f} |"
              f" {statistics.median(hook_median[name]):.2f} | {calls[name]:.1f} |")


def _calls_per_step(data: Batches, callbacks: Callable[[], list[Callback]], bar: bool, env: dict[str, str]) -> float:
    """Python function calls per step over a whole fit (cProfile): a count the machine's load does not move."""
    torch.manual_seed(0)
    model = TinyMLP()
    with _to_file(env):
        trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=bar,
                             callbacks=callbacks())
        profile = cProfile.Profile()
        profile.enable()
        trainer.fit(model, data)
        profile.disable()
    return pstats.Stats(profile).total_calls / STEPS  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
