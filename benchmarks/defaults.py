"""The Trainer a user actually gets, every default on, against a hand-written loop with a tqdm bar.

    python benchmarks/defaults.py --rounds 12 --processes 4   # the table (also `benchmarks/run.py --only defaults`)
    python benchmarks/defaults.py --breakdown   # time inside the bar, ModelCheckpoint and the logger, per step
    python benchmarks/defaults.py --profile     # cProfile of one torchbolt fit: its callbacks and loggers

Workload: the tiny 32-32-2 MLP (``tiny_mlp``: batch 64, SGD), 2,000 pre-made batches, one epoch. The
module logs ``self.log("train_loss", loss, prog_bar=True)`` every step; the frameworks run
``Trainer(max_epochs=1, default_root_dir=<a fresh temporary directory>)`` and nothing else: the default
logger (TensorBoard when installed, else CSV), ``ModelCheckpoint``, the model summary and the progress
bar. Everything they print goes to ``/dev/null``.

Implementations, one of each per round, in a rotating order (each follows each other one equally often):

* ``raw + tqdm`` (**the reference**): the loop a careful user writes to see the loss,
  ``for batch in tqdm(batches): ...; bar.set_postfix(loss=loss.item(), refresh=False)``: a host
  conversion and a postfix string every step, a redraw on tqdm's own 0.1 s budget;
* ``raw + tqdm, redraw every step``: the common idiom ``bar.set_postfix(loss=loss.item())`` (its default
  ``refresh=True`` redraws the bar at every call);
* ``raw, no bar``: the bare loop, to show what the bar itself costs;
* ``torchbolt defaults (bar)``: as on a terminal (``TORCHBOLT_PROGRESS=bar`` forces the bar, since
  ``/dev/null`` is no terminal);
* ``torchbolt defaults (log file)``: as in a batch job's log, where the default display writes plain
  lines (no ``TORCHBOLT_PROGRESS``);
* ``Lightning defaults``: ``pytorch_lightning`` 2.x, only when it is importable.

Times: "us/step" covers the training batches only: from ``on_train_start`` to the module's
``on_train_epoch_end`` (after the bar's last redraw, before ``ModelCheckpoint`` saves) for the
frameworks, the loop including the bar's creation and closing for the raw loops. "vs reference" is the
median over rounds of each round's ratio to the same round's reference, with the range of the
middle half of those ratios (the spread). Machine load only ever adds time, so the fastest round of
each is shown too: the ratio of those comes closest to the cost on a quiet machine. The one-off costs
are reported apart: "setup" is from the ``fit`` call to ``on_train_start`` (model summary, logger
directory, callbacks), "teardown" from the epoch end to ``fit`` returning (the checkpoint, the logger's
final flush); "whole fit" is the whole ``fit`` call (for the raw loops: the model, the optimizer and
the loop) divided by the number of steps.
Every round also checks that each implementation ended with exactly the reference's weights.

With ``--processes N`` (``benchmarks/run.py`` uses 4) the rounds are shared among N fresh interpreters run
one after the other: on a shared machine one process's memory layout can favour or slow one
implementation by several percent for all of its rounds, so pooling rounds from several processes
gives the steadier median.
"""

from __future__ import annotations

import contextlib
import cProfile
import gc
import os
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from models import VARIANTS, WORKLOADS, Batches, Prepared, _fresh_model, lightning_available, prepare, same_weights
from torch import Tensor

STEPS = 2000
REFERENCE = "raw + tqdm"


@dataclass
class Timing:
    """One run: per-step wall and CPU seconds over the training batches, and the one-off parts."""

    steps_s: float
    steps_cpu_s: float
    setup_s: float
    teardown_s: float
    total_s: float
    state: dict[str, Tensor]


@contextlib.contextmanager
def _to_devnull(env: dict[str, str] | None = None) -> Iterator[None]:
    """Print everything (bars, the model summary, warnings) to /dev/null, with ``env`` set meanwhile."""
    env = env or {}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---------------------------------------------------------------------------- hand-written loops
def _raw(p: Prepared, bar: str) -> Timing:
    """The hand-written loop; ``bar`` is ``"none"``, ``"postfix"`` (refresh=False) or ``"redraw"``."""
    from tqdm import tqdm

    loss_fn = p.workload.loss
    with open(os.devnull, "w") as sink:
        fit_start = time.perf_counter()
        model = _fresh_model(p)
        model.train()
        optimizer = p.workload.optimizer(model.parameters())
        start, cpu_start = time.perf_counter(), time.process_time()
        if bar == "none":
            for batch in p.train:
                loss = loss_fn(model, batch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        else:
            refresh = bar == "redraw"
            progress = tqdm(p.train, file=sink)
            for batch in progress:
                loss = loss_fn(model, batch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                progress.set_postfix(loss=loss.item(), refresh=refresh)
        end, cpu_end = time.perf_counter(), time.process_time()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return Timing(end - start, cpu_end - cpu_start, start - fit_start, 0.0, end - fit_start, state)


# ---------------------------------------------------------------------------- frameworks at their defaults
def _module_class(base: type, p: Prepared, marks: dict[str, float]) -> type:
    loss_fn = p.workload.loss
    make_optimizer = p.workload.optimizer

    class DefaultsModule(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.model = _fresh_model(p)

        def forward(self, x: Tensor) -> Tensor:
            return self.model(x)

        def training_step(self, batch: Any, batch_idx: int) -> Tensor:
            loss = loss_fn(self.model, batch)
            self.log("train_loss", loss, prog_bar=True)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return make_optimizer(self.model.parameters())

        # module hooks, not a callback: an extra callback would add its own per-step dispatch
        def on_train_start(self) -> None:
            marks["start"], marks["cpu_start"] = time.perf_counter(), time.process_time()

        def on_train_epoch_end(self) -> None:
            marks["end"], marks["cpu_end"] = time.perf_counter(), time.process_time()

    return DefaultsModule


def _framework(pl: Any, p: Prepared, env: dict[str, str] | None = None, **off: bool) -> Timing:
    """One fit with every default on, except the features ``off`` turns off (``logger=False``...)."""
    marks: dict[str, float] = {}
    module_cls = _module_class(pl.LightningModule, p, marks)
    with tempfile.TemporaryDirectory() as root, _to_devnull(env):
        fit_start = time.perf_counter()
        model = module_cls()
        trainer = pl.Trainer(max_epochs=1, default_root_dir=root, **off)
        trainer.fit(model, Batches(p.train))
        fit_end = time.perf_counter()
        assert trainer.global_step == p.steps, trainer.global_step
    state = {k.removeprefix("model."): v.detach().clone() for k, v in model.state_dict().items()}
    return Timing(marks["end"] - marks["start"], marks["cpu_end"] - marks["cpu_start"],
                  marks["start"] - fit_start, fit_end - marks["end"], fit_end - fit_start, state)


def _torchbolt(p: Prepared, env: dict[str, str], **off: bool) -> Timing:
    import logging

    import torchbolt

    logging.getLogger("torchbolt").setLevel(logging.WARNING)  # its info lines go to the real stderr
    return _framework(torchbolt, p, env, **off)


def _lightning(p: Prepared) -> Timing:
    import logging

    import pytorch_lightning

    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return _framework(pytorch_lightning, p)


def implementations(with_lightning: bool) -> dict[str, Callable[[Prepared], Timing]]:
    impls: dict[str, Callable[[Prepared], Timing]] = {
        REFERENCE: lambda p: _raw(p, "postfix"),
        "raw + tqdm, redraw every step": lambda p: _raw(p, "redraw"),
        "raw, no bar": lambda p: _raw(p, "none"),
        "torchbolt defaults (bar)": lambda p: _torchbolt(p, {"TORCHBOLT_PROGRESS": "bar"}),
        "torchbolt defaults (log file)": lambda p: _torchbolt(p, {"TORCHBOLT_PROGRESS": "auto"}),
    }
    if with_lightning and lightning_available():
        impls["Lightning defaults"] = _lightning
    return impls


# ---------------------------------------------------------------------------- measurement
@dataclass
class DefaultsResult:
    steps: int
    rounds: int
    per_step: dict[str, list[float]] = field(default_factory=dict)  # us/step, wall
    per_step_cpu: dict[str, list[float]] = field(default_factory=dict)
    setup_ms: dict[str, list[float]] = field(default_factory=dict)
    teardown_ms: dict[str, list[float]] = field(default_factory=dict)
    total: dict[str, list[float]] = field(default_factory=dict)  # us/step over the whole fit
    weights_equal: dict[str, bool] = field(default_factory=dict)


def _orders(names: list[str], rounds: int) -> list[list[str]]:
    """Rotations of ``names``, alternately reversed: each one runs in each position and after each other."""
    n = len(names)
    orders = []
    for r in range(rounds):
        rotated = names[r % n:] + names[:r % n]
        orders.append(rotated[::-1] if (r // n) % 2 else rotated)
    return orders


def measure(rounds: int, steps: int = STEPS, with_lightning: bool = True,
            log: Callable[[str], None] = lambda _: None, processes: int = 1) -> DefaultsResult:
    """``rounds`` paired rounds; with ``processes`` > 1 they are shared among that many fresh interpreters,
    one after the other (each warms up first): a process's memory layout favours or slows one
    implementation for all of its rounds, so rounds pooled from several processes average that out."""
    if processes > 1:
        return _measure_in_processes(rounds, steps, with_lightning, log, processes)
    return _measure(rounds, steps, with_lightning, log)


def _measure_in_processes(rounds: int, steps: int, with_lightning: bool, log: Callable[[str], None],
                          processes: int) -> DefaultsResult:
    import json
    import subprocess

    result = DefaultsResult(steps, rounds)
    first = 0
    for i in range(processes):
        count = rounds // processes + (1 if i < rounds % processes else 0)
        if count == 0:
            continue
        command = [sys.executable, os.path.abspath(__file__), "--worker", "--rounds", str(count), "--steps", str(steps),
                   "--first-round", str(first)] + ([] if with_lightning else ["--no-lightning"])
        log(f"defaults: process {i + 1}/{processes} ({count} rounds)")
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        part = json.loads(done.stdout.strip().splitlines()[-1])
        for name in ("per_step", "per_step_cpu", "setup_ms", "teardown_ms", "total"):
            for impl, values in part[name].items():
                getattr(result, name).setdefault(impl, []).extend(values)
        for impl, equal in part["weights_equal"].items():
            result.weights_equal[impl] = result.weights_equal.get(impl, True) and equal
        first += count
    return result


def _measure(rounds: int, steps: int, with_lightning: bool, log: Callable[[str], None],
             first_round: int = 0) -> DefaultsResult:
    p = prepare(WORKLOADS["tiny_mlp"], VARIANTS["plain"], torch.device("cpu"), steps)
    impls = implementations(with_lightning)
    names = list(impls)
    result = DefaultsResult(p.steps, rounds)
    for name in names:  # warm-up: lazy imports and first-call paths are no per-step cost
        impls[name](p)
    for r, order in enumerate(_orders(names, first_round + rounds)[first_round:]):
        runs: dict[str, Timing] = {}
        for name in order:
            gc.collect()
            runs[name] = t = impls[name](p)
            result.per_step.setdefault(name, []).append(t.steps_s / p.steps * 1e6)
            result.per_step_cpu.setdefault(name, []).append(t.steps_cpu_s / p.steps * 1e6)
            result.setup_ms.setdefault(name, []).append(t.setup_s * 1e3)
            result.teardown_ms.setdefault(name, []).append(t.teardown_s * 1e3)
            result.total.setdefault(name, []).append(t.total_s / p.steps * 1e6)
        for name in names:
            equal = same_weights(runs[REFERENCE].state, runs[name].state)
            result.weights_equal[name] = result.weights_equal.get(name, True) and equal
        log(f"defaults round {r + 1}/{rounds}: " + ", ".join(
            f"{name} {result.per_step[name][-1]:.0f}" for name in names) + " us/step")
    return result


def _ratio(values: list[float], reference: list[float]) -> str:
    ratios = sorted(a / b for a, b in zip(values, reference))
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    return f"{statistics.median(ratios):.3f}x ({q[0]:.3f}-{q[2]:.3f})"


def format_table(result: DefaultsResult) -> str:
    ref, ref_cpu, ref_total = (result.per_step[REFERENCE], result.per_step_cpu[REFERENCE],
                               result.total[REFERENCE])
    lines = ["| implementation | us/step | vs reference: median (middle half) | fastest round us/step (vs reference's)"
             " | CPU us/step | vs reference (CPU) | setup ms | teardown ms | whole fit us/step | whole fit vs reference"
             " | weights == reference |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, values in result.per_step.items():
        cpu = result.per_step_cpu[name]
        lines.append(
            f"| {name} | {statistics.median(values):.0f} | {_ratio(values, ref)} | {min(values):.0f}"
            f" ({min(values) / min(ref):.3f}x) | {statistics.median(cpu):.0f} |"
            f" {_ratio(cpu, ref_cpu)} | {statistics.median(result.setup_ms[name]):.1f} |"
            f" {statistics.median(result.teardown_ms[name]):.1f} | {statistics.median(result.total[name]):.0f} |"
            f" {_ratio(result.total[name], ref_total)} | {'yes' if result.weights_equal[name] else 'NO'} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- where the time goes
def _components() -> dict[str, tuple[type, str]]:
    """The per-step work a default Trainer adds to the loop, as (class, method) to time in place."""
    from torchbolt.callbacks import ModelCheckpoint, TQDMProgressBar
    from torchbolt.loggers import TensorBoardLogger
    from torchbolt.trainer.logging import MetricSink

    return {
        "progress bar: `on_train_batch_end`": (TQDMProgressBar, "on_train_batch_end"),
        "ModelCheckpoint: `on_train_batch_end`": (ModelCheckpoint, "on_train_batch_end"),
        "step metrics: `publish_train_step` (all of the below)": (MetricSink, "publish_train_step"),
        "  logger flush: `send` (every `log_every_n_steps`)": (MetricSink, "send"),
        "    TensorBoard `log_metrics`": (TensorBoardLogger, "log_metrics"),
        "    TensorBoard `save` (flush)": (TensorBoardLogger, "save"),
    }


@contextlib.contextmanager
def _timed_methods(targets: dict[str, tuple[type, str]], spent: dict[str, float]) -> Iterator[None]:
    """Add the wall time of every call of each ``(class, method)`` to ``spent[name]`` while active."""
    saved = []
    for name, (cls, method) in targets.items():
        original = cls.__dict__[method]
        saved.append((cls, method, original))

        def timed(*args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                spent[_name] += time.perf_counter() - start

        setattr(cls, method, timed)
    try:
        yield
    finally:
        for cls, method, original in saved:
            setattr(cls, method, original)


def breakdown(rounds: int, steps: int = STEPS, log: Callable[[str], None] = lambda _: None) -> str:
    """Where a default Trainer's extra time goes: the time spent inside each default feature's per-step
    methods during a fit (the bar forced), per step, as the median over ``rounds`` fits. Timed in place,
    these short intervals are far less disturbed by a busy machine than whole-run differences."""
    p = prepare(WORKLOADS["tiny_mlp"], VARIANTS["plain"], torch.device("cpu"), steps)
    targets = _components()
    per_step: dict[str, list[float]] = {name: [] for name in targets}
    totals: list[float] = []
    _torchbolt(p, {"TORCHBOLT_PROGRESS": "bar"})  # warm-up
    for r in range(rounds):
        spent = dict.fromkeys(targets, 0.0)
        with _timed_methods(targets, spent):
            t = _torchbolt(p, {"TORCHBOLT_PROGRESS": "bar"})
        totals.append(t.steps_s / p.steps * 1e6)
        for name in targets:
            per_step[name].append(spent[name] / p.steps * 1e6)
        log(f"breakdown round {r + 1}/{rounds}")
    lines = [f"torchbolt at defaults (bar forced), {steps} steps x {rounds} fits; median run {statistics.median(totals):.0f}"
             " us/step (timed: a little slower than untimed)", "",
             "| per-step work | us per step (median over fits) | min - max |", "|---|---|---|"]
    for name, values in per_step.items():
        lines.append(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} - {max(values):.2f} |")
    return "\n".join(lines)


def profile(steps: int = STEPS, top: int = 25) -> str:
    """cProfile of one torchbolt run at defaults (the bar forced): the functions of torchbolt, its
    callbacks and loggers, and of tensorboard, sorted by their own time, as us per step."""
    import torchbolt

    p = prepare(WORKLOADS["tiny_mlp"], VARIANTS["plain"], torch.device("cpu"), steps)
    _torchbolt(p, {"TORCHBOLT_PROGRESS": "bar"})  # warm-up
    profiler = cProfile.Profile()
    marks: dict[str, float] = {}
    module_cls = _module_class(torchbolt.LightningModule, p, marks)
    with tempfile.TemporaryDirectory() as root, _to_devnull({"TORCHBOLT_PROGRESS": "bar"}):
        model = module_cls()
        trainer = torchbolt.Trainer(max_epochs=1, default_root_dir=root)
        profiler.enable()
        trainer.fit(model, Batches(p.train))
        profiler.disable()
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        path = filename.replace("\\", "/")
        if any(part in path for part in _PROFILED):
            rows.append((ct, tt, nc, f"{_short(filename)}:{line}({func})"))
    lines = [f"cProfile of one torchbolt fit at defaults, {steps} steps (torchbolt's callbacks, loggers, logging"
             " and the tensorboard writer only): us per step, cumulative and own, and calls",
             "| function | cumulative us/step | own us/step | calls |", "|---|---|---|---|"]
    for ct, tt, nc, name in sorted(rows, reverse=True)[:top]:
        lines.append(f"| `{name}` | {ct / steps * 1e6:.2f} | {tt / steps * 1e6:.2f} | {nc} |")
    return "\n".join(lines)


# the per-step costs a default Trainer adds on top of the loop itself
_PROFILED = ("/torchbolt/callbacks/", "/torchbolt/loggers/", "/torchbolt/trainer/logging.py", "/tensorboard/",
             "/torch/utils/tensorboard/", "/tqdm/")


def _short(filename: str) -> str:
    for marker in ("/torchbolt/", "/site-packages/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--no-lightning", action="store_true")
    parser.add_argument("--profile", action="store_true", help="print a cProfile breakdown of the torchbolt run")
    parser.add_argument("--breakdown", action="store_true",
                        help="time the per-step methods of the bar, ModelCheckpoint and the logger in place")
    parser.add_argument("--processes", type=int, default=1,
                        help="share the rounds among this many fresh interpreters (pools away one process's luck)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--first-round", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.worker:  # one process of `--processes`: its rounds as JSON on the last line
        import dataclasses
        import json

        part = _measure(args.rounds, args.steps, not args.no_lightning, lambda _: None, args.first_round)
        print(json.dumps(dataclasses.asdict(part)))
        return
    if args.profile:
        print(profile(args.steps))
        return
    if args.breakdown:
        print(breakdown(args.rounds, args.steps, log=lambda m: print(m, file=sys.stderr)))
        return
    result = measure(args.rounds, args.steps, not args.no_lightning, log=lambda m: print(m, file=sys.stderr),
                     processes=args.processes)
    print(format_table(result))


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    main()
