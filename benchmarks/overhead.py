"""Per-step time of the raw loop, torchbolt and PyTorch Lightning, side by side in one process.

The implementations run alternately (every order in turn, one per round) on the same pre-made batches,
so a slow moment of the machine hits all of them alike. The columns "us/step" are medians over rounds;
"vs raw" is the median over rounds of each round's ratio (difference) to that round's raw loop, the
estimate that a busy machine disturbs least. Every round also checks that each framework ended with
exactly the raw loop's weights.
"""

from __future__ import annotations

import gc
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from models import (
    VARIANTS,
    WORKLOADS,
    Prepared,
    RunResult,
    lightning_available,
    lightning_fit,
    max_abs_diff,
    prepare,
    raw_fit,
    same_weights,
    torchbolt_fit,
)


@dataclass
class OverheadRow:
    """The medians of one workload x variant (microseconds per training batch)."""

    workload: str
    variant: str
    steps: int
    rounds: int
    times: dict[str, list[float]] = field(default_factory=dict)
    cpu_times: dict[str, list[float]] = field(default_factory=dict)
    setup: dict[str, list[float]] = field(default_factory=dict)
    weights_equal: dict[str, bool] = field(default_factory=dict)
    max_diff: dict[str, float] = field(default_factory=dict)

    def median(self, impl: str, cpu: bool = False) -> float:
        values = (self.cpu_times if cpu else self.times).get(impl)
        return statistics.median(values) if values else float("nan")

    def ratio(self, impl: str, cpu: bool = False) -> float:
        """Median over rounds of (impl time / raw time of the same round): robust to a busy machine."""
        values = self.cpu_times if cpu else self.times
        return statistics.median(a / b for a, b in zip(values[impl], values["raw"]))

    def extra_us(self, impl: str, cpu: bool = False) -> float:
        """Median over rounds of (impl time - raw time of the same round), in us per step."""
        values = self.cpu_times if cpu else self.times
        return statistics.median(a - b for a, b in zip(values[impl], values["raw"]))


def _implementations(with_lightning: bool, precision: str, sync_debug: bool
                     ) -> dict[str, Callable[[Prepared], RunResult]]:
    impls: dict[str, Callable[[Prepared], RunResult]] = {
        "raw": lambda p: raw_fit(p, sync_debug=sync_debug, precision=precision),
        "torchbolt": lambda p: torchbolt_fit(p, precision, sync_debug=sync_debug),
    }
    if with_lightning and lightning_available():
        impls["lightning"] = lambda p: lightning_fit(p, precision, sync_debug=sync_debug)
    return impls


def _timed(fn: Callable[[Prepared], RunResult], p: Prepared) -> tuple[RunResult, float]:
    gc.collect()
    cpu_start = time.process_time()
    result = fn(p)
    return result, time.process_time() - cpu_start


def measure(workload: str, variant: str, rounds: int, device: torch.device, steps: int | None = None,
            with_lightning: bool = True, precision: str = "32-true", sync_debug: bool = False) -> OverheadRow:
    """Run every implementation ``rounds`` times, alternating, and collect per-step times."""
    p = prepare(WORKLOADS[workload], VARIANTS[variant], device, steps)
    impls = _implementations(with_lightning, precision, sync_debug)
    row = OverheadRow(workload, variant, p.steps, rounds)
    names = list(impls)
    # one warm-up run each: first-call costs (lazy imports, allocator growth) are not per-step costs
    for name in names:
        impls[name](p)
    # every order of the implementations in turn, so each one follows each other one equally often (a run
    # after Lightning's, which leaves much garbage behind, would otherwise be penalized more often)
    orders = list(itertools.permutations(names))
    for r in range(rounds):
        order = orders[r % len(orders)]
        results: dict[str, RunResult] = {}
        for name in order:
            result, cpu = _timed(impls[name], p)
            results[name] = result
            row.times.setdefault(name, []).append(result.seconds / p.steps * 1e6)
            row.cpu_times.setdefault(name, []).append((cpu - result.setup_seconds) / p.steps * 1e6)
            row.setup.setdefault(name, []).append(result.setup_seconds * 1e3)
        reference = results["raw"].state
        for name in names[1:]:
            equal = same_weights(reference, results[name].state)
            row.weights_equal[name] = row.weights_equal.get(name, True) and equal
            row.max_diff[name] = max(row.max_diff.get(name, 0.0), max_abs_diff(reference, results[name].state))
    return row


def format_rows(rows: list[OverheadRow]) -> str:
    """A Markdown table: per-step medians, ratios to the raw loop and the weight check."""
    has_pl = any("lightning" in r.times for r in rows)
    header = ["workload", "variant", "steps x rounds", "raw us/step", "torchbolt us/step", "torchbolt vs raw"]
    if has_pl:
        header += ["Lightning us/step", "Lightning vs raw"]
    header += ["final weights == raw"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r.workload, r.variant, f"{r.steps} x {r.rounds}", f"{r.median('raw'):.0f}",
                 f"{r.median('torchbolt'):.0f}",
                 f"{r.ratio('torchbolt'):.3f}x ({r.extra_us('torchbolt'):+.0f} us)"]
        if has_pl:
            if "lightning" in r.times:
                cells += [f"{r.median('lightning'):.0f}",
                          f"{r.ratio('lightning'):.2f}x ({r.extra_us('lightning'):+.0f} us)"]
            else:
                cells += ["-", "-"]
        checks = [f"{name}: " + ("yes" if ok else f"NO (max diff {r.max_diff[name]:.2e})")
                  for name, ok in r.weights_equal.items()]
        cells.append(", ".join(checks))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_cpu_rows(rows: list[OverheadRow]) -> str:
    """The same comparison in CPU time of the process (less sensitive to other processes on the machine)."""
    lines = ["| workload | variant | raw CPU us/step | torchbolt CPU us/step | torchbolt vs raw | fit setup ms"
             " (torchbolt / Lightning) |", "|---|---|---|---|---|---|"]
    for r in rows:
        pl_setup = f"{statistics.median(r.setup['lightning']):.0f}" if "lightning" in r.setup else "-"
        lines.append(
            f"| {r.workload} | {r.variant} | {r.median('raw', True):.0f} | {r.median('torchbolt', True):.0f} |"
            f" {r.ratio('torchbolt', True):.3f}x ({r.extra_us('torchbolt', True):+.0f} us) |"
            f" {statistics.median(r.setup['torchbolt']):.0f} / {pl_setup} |"
        )
    return "\n".join(lines)


def summary(rows: list[OverheadRow]) -> dict[str, Any]:
    return {f"{r.workload}/{r.variant}": {k: r.median(k) for k in r.times} for r in rows}
