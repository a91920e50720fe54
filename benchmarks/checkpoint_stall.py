"""How long a checkpoint stops training: synchronous ``ModelCheckpoint``, ``ModelCheckpoint(async_save=True)``
and ``torch.save`` in a hand-written loop, side by side in one process.

The model has ~100 MB of fp32 parameters (three ``Linear`` layers of 2048x4096; SGD without momentum,
so a checkpoint is ~100 MB). Every run trains ``steps`` steps on the same pre-made batches and
saves every ``every`` steps into a fresh directory. Per run:

* **stall per checkpoint**: the duration of a step that saved minus the median duration of the
  steps of that run that did not (a step is timed from one batch start to the next, so it contains
  the checkpoint callback); the median over the run's checkpoints;
* **extra time per checkpoint**: the run's wall time minus that of the same training without
  checkpoints (the same round), divided by the number of checkpoints. For the asynchronous
  variant it also counts the writer thread competing with training for the CPU and the wait for
  the last write at the end of ``fit``.

The variants run in turn inside each round (a rotated order per round), so a busy moment of the
machine hits all of them alike; the table reports medians over rounds.

    python benchmarks/checkpoint_stall.py                       # 3 rounds, 60 steps, a checkpoint every 10
    python benchmarks/checkpoint_stall.py --rounds 1 --steps 30 # a quick look
    python benchmarks/run.py --only checkpoint                  # the same, inside the benchmark report
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's torchbolt

WIDTH, HIDDEN, BATCH = 2048, 4096, 16
VARIANTS = ["no checkpoints", "raw torch.save", "ModelCheckpoint", "ModelCheckpoint(async_save=True)"]


def _network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(WIDTH, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, WIDTH), nn.ReLU(),
                         nn.Linear(WIDTH, HIDDEN))


def _batches(steps: int) -> list[Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(BATCH, WIDTH, generator=generator) for _ in range(steps)]


@dataclass
class RunTimes:
    """One run: the wall time, the duration of every step, and which steps saved."""

    wall: float
    steps: list[float]
    saved: list[bool]

    def stall(self) -> float:
        plain = statistics.median(d for d, s in zip(self.steps, self.saved) if not s)
        saving = [d - plain for d, s in zip(self.steps, self.saved) if s]
        return statistics.median(saving) if saving else float("nan")

    @property
    def checkpoints(self) -> int:
        return sum(self.saved)


def _step_durations(starts: list[float], end: float) -> list[float]:
    return [b - a for a, b in zip(starts, [*starts[1:], end])]


def raw_run(batches: list[Tensor], every: int, directory: Path | None) -> RunTimes:
    """A hand-written loop; ``torch.save`` of the model and optimizer state every ``every`` steps."""
    model = _network()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    starts: list[float] = []
    begin = time.perf_counter()
    for i, x in enumerate(batches):
        starts.append(time.perf_counter())
        loss = F.mse_loss(model(x), torch.zeros(BATCH, HIDDEN))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if directory is not None and (i + 1) % every == 0:
            torch.save({"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(), "step": i + 1},
                       directory / "raw.ckpt")
    end = time.perf_counter()
    saved = [directory is not None and (i + 1) % every == 0 for i in range(len(batches))]
    return RunTimes(end - begin, _step_durations(starts, end), saved)


def torchbolt_run(batches: list[Tensor], every: int, directory: Path | None, async_save: bool) -> RunTimes:
    """``Trainer.fit`` with a ``ModelCheckpoint`` saving every ``every`` steps (none without ``directory``)."""
    import torchbolt as pl
    from torchbolt.callbacks import Callback, ModelCheckpoint

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _network()

        def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
            return F.mse_loss(self.net(batch), torch.zeros(BATCH, HIDDEN))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=1e-4)

    starts: list[float] = []
    marks: dict[str, float] = {}

    class Clock(Callback):
        def on_train_start(self, *args: Any) -> None:
            marks["begin"] = time.perf_counter()

        def on_train_batch_start(self, *args: Any) -> None:
            starts.append(time.perf_counter())

        def on_train_end(self, *args: Any) -> None:
            marks["train_end"] = time.perf_counter()

    callbacks: list[Callback] = [Clock()]
    if directory is not None:
        callbacks.append(ModelCheckpoint(dirpath=directory, every_n_train_steps=every, save_top_k=1,
                                         async_save=async_save))
    trainer = pl.Trainer(max_steps=len(batches), logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=directory is not None,
                         num_sanity_val_steps=0, limit_val_batches=0, callbacks=callbacks)
    trainer.fit(Module(), train_dataloaders=_Loader(batches))
    end = time.perf_counter()  # `fit` returned: the last checkpoint is on disk
    saved = [directory is not None and (i + 1) % every == 0 for i in range(len(batches))]
    return RunTimes(end - marks["begin"], _step_durations(starts, marks["train_end"]), saved)


class _Loader:
    """The pre-made batches, as a re-iterable with a length (no collation cost)."""

    def __init__(self, batches: list[Tensor]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Any:
        return iter(self.batches)


@dataclass
class StallRow:
    variant: str
    runs: list[RunTimes] = field(default_factory=list)
    extra: list[float] = field(default_factory=list)  # extra wall time per checkpoint, per round


def measure(rounds: int = 3, steps: int = 60, every: int = 10, root: Path | None = None,
            log: Callable[[str], None] | None = None) -> dict[str, StallRow]:
    """Run every variant ``rounds`` times (rotated order per round); the rows by variant."""
    batches = _batches(steps)
    rows = {v: StallRow(v) for v in VARIANTS}
    runners: dict[str, Callable[[Path | None], RunTimes]] = {
        "no checkpoints": lambda d: torchbolt_run(batches, every, None, False),
        "raw torch.save": lambda d: raw_run(batches, every, d),
        "ModelCheckpoint": lambda d: torchbolt_run(batches, every, d, False),
        "ModelCheckpoint(async_save=True)": lambda d: torchbolt_run(batches, every, d, True),
    }
    raw_plain = "raw, no checkpoints"
    for r in range(rounds):
        order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
        walls: dict[str, float] = {}
        for variant in [*order, raw_plain]:
            directory = Path(tempfile.mkdtemp(prefix="ckpt-stall-", dir=root))
            gc.collect()
            try:
                result = raw_run(batches, every, None) if variant == raw_plain else runners[variant](directory)
            finally:
                shutil.rmtree(directory, ignore_errors=True)
            walls[variant] = result.wall
            if variant != raw_plain:
                rows[variant].runs.append(result)
            if log is not None and variant != raw_plain:
                log(f"round {r + 1}/{rounds} {variant}: {result.wall:.2f} s, stall {result.stall() * 1e3:.0f} ms")
        for variant in VARIANTS[1:]:
            baseline = walls[raw_plain] if variant == "raw torch.save" else walls["no checkpoints"]
            runs = rows[variant].runs[-1]
            rows[variant].extra.append((walls[variant] - baseline) / runs.checkpoints)
    return rows


def format_table(rows: dict[str, StallRow], steps: int, every: int) -> str:
    size_mb = sum(p.numel() for p in _network().parameters()) * 4 / 1e6
    sync = statistics.median(r.stall() for r in rows["ModelCheckpoint"].runs)
    lines = [
        f"Model: {size_mb:.0f} MB of fp32 parameters; {steps} steps, a checkpoint every {every} steps;"
        f" median step without a checkpoint"
        f" {statistics.median(statistics.median(r.steps) for r in rows['no checkpoints'].runs) * 1e3:.0f} ms.",
        "",
        "| variant | stall per checkpoint (ms) | vs synchronous ModelCheckpoint (ratio of medians; median of"
        " per-round ratios) | stall per round (ms) | extra wall time per checkpoint (ms) |",
        "|---|---|---|---|---|",
    ]
    sync_runs = rows["ModelCheckpoint"].runs
    for variant in VARIANTS[1:]:
        runs = rows[variant].runs
        stall = statistics.median(r.stall() for r in runs)
        per_round = statistics.median(r.stall() / s.stall() for r, s in zip(runs, sync_runs))
        extra = statistics.median(rows[variant].extra)
        rounds = ", ".join(f"{r.stall() * 1e3:.0f}" for r in runs)
        lines.append(f"| {variant} | {stall * 1e3:.0f} | {stall / sync * 100:.0f}%; {per_round * 100:.0f}% | {rounds}"
                     f" | {extra * 1e3:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--dir", type=Path, default=None, help="where the checkpoints go (default: the temp dir)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = measure(args.rounds, args.steps, args.every, args.dir, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_table(rows, args.steps, args.every))


if __name__ == "__main__":
    main()
