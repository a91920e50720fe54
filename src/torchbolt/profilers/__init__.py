"""Profilers: where the time of a run goes (``Trainer(profiler="simple" | "advanced" | "pytorch")``)."""

from __future__ import annotations

from typing import Any

from torchbolt.profilers.advanced import AdvancedProfiler
from torchbolt.profilers.profiler import PassThroughProfiler, Profiler
from torchbolt.profilers.pytorch import PyTorchProfiler
from torchbolt.profilers.simple import SimpleProfiler
from torchbolt.profilers.xla import XLAProfiler
from torchbolt.utilities.exceptions import MisconfigurationException

__all__ = ["AdvancedProfiler", "PassThroughProfiler", "Profiler", "PyTorchProfiler", "SimpleProfiler",
           "XLAProfiler", "resolve_profiler"]

_PROFILERS: dict[str, type[Profiler]] = {
    "simple": SimpleProfiler,
    "advanced": AdvancedProfiler,
    "pytorch": PyTorchProfiler,
}


def resolve_profiler(profiler: Any, root_dir: str) -> Profiler:
    """``Trainer(profiler=...)``: ``None`` -> no profiling, a name -> that profiler, or an instance.

    Raises:
        MisconfigurationException: for an unknown name or another type.
    """
    if profiler is None:
        return PassThroughProfiler()
    if isinstance(profiler, Profiler):
        return profiler
    if isinstance(profiler, str):
        name = profiler.lower()
        if name == "xla":
            return XLAProfiler()  # raises naming `torch_xla` when it is not installed
        if name in _PROFILERS:
            return _PROFILERS[name]()
        raise MisconfigurationException(
            f"`Trainer(profiler={profiler!r})`: when passing a string it can only be one of"
            f" {sorted(_PROFILERS)} (or pass a `Profiler` instance)."
        )
    raise MisconfigurationException(
        f"`Trainer(profiler={profiler!r})`: pass 'simple', 'advanced', 'pytorch', a `Profiler` instance or None."
    )
