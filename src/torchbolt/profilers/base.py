"""Lightning's old module path of :class:`~torchbolt.profilers.PassThroughProfiler` (the profiler that records nothing)."""

from torchbolt.profilers.profiler import PassThroughProfiler

__all__ = ["PassThroughProfiler"]
