"""Profilers: where the time of a run goes."""

from __future__ import annotations

from typing import Any

from torchbolt.profilers.profiler import PassThroughProfiler, Profiler
from torchbolt.utilities.exceptions import MisconfigurationException

__all__ = ["PassThroughProfiler", "Profiler", "resolve_profiler"]


def resolve_profiler(profiler: Any, root_dir: str) -> Profiler:
    """``Trainer(profiler=...)``: ``None`` -> no profiling, a name -> that profiler, or an instance."""
    if profiler is None:
        return PassThroughProfiler()
    if isinstance(profiler, Profiler):
        return profiler
    raise MisconfigurationException(
        f"`Trainer(profiler={profiler!r})`: pass a `Profiler` instance or None."
    )
