"""Function calls per training step (Python and C functions, counted by ``cProfile``): a machine-
independent view of the framework's per-step work, immune to a busy machine's timing noise."""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Callable
from typing import Any

import torch
from models import VARIANTS, WORKLOADS, lightning_available, lightning_fit, prepare, raw_fit, torchbolt_fit


def _calls(fit: Callable[[Any], Any], p: Any) -> float:
    fit(p)  # warm-up: lazy imports and first-call paths are not per-step work
    profiler = cProfile.Profile()
    profiler.enable()
    fit(p)
    profiler.disable()
    return pstats.Stats(profiler).total_calls / p.steps  # type: ignore[attr-defined]


def measure(workload: str, variants: list[str], steps: int, with_lightning: bool) -> list[dict[str, Any]]:
    impls: dict[str, Callable[[Any], Any]] = {"raw": raw_fit, "torchbolt": torchbolt_fit}
    if with_lightning and lightning_available():
        impls["lightning"] = lightning_fit
    rows = []
    for variant in variants:
        p = prepare(WORKLOADS[workload], VARIANTS[variant], torch.device("cpu"), steps)
        rows.append({"workload": workload, "variant": variant, **{k: _calls(f, p) for k, f in impls.items()}})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    has_pl = any("lightning" in r for r in rows)
    header = "| workload | variant | raw calls/step | torchbolt calls/step | torchbolt extra |"
    header += " Lightning calls/step | Lightning extra |" if has_pl else ""
    lines = [header, "|---|---|---|---|---|" + ("---|---|" if has_pl else "")]
    for r in rows:
        line = (f"| {r['workload']} | {r['variant']} | {r['raw']:.0f} | {r['torchbolt']:.0f} |"
                f" {r['torchbolt'] - r['raw']:+.0f} |")
        if has_pl:
            line += f" {r['lightning']:.0f} | {r['lightning'] - r['raw']:+.0f} |" if "lightning" in r else " - | - |"
        lines.append(line)
    return "\n".join(lines)
