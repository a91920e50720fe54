"""``XLAProfiler``: serves ``torch_xla``'s profiler so TensorBoard can capture a trace of a TPU run."""

from __future__ import annotations

from typing import Any

from torchbolt.profilers.profiler import Profiler


class XLAProfiler(Profiler):
    """Starts ``torch_xla``'s profiling server and marks each profiled action as a named trace region.

    Capture a trace while the run goes on with TensorBoard's profile plug-in ("capture profile",
    address ``localhost:<port>``); the regions are named after the actions (``training_step``...).

    Args:
        port: the port of the profiling server.
        **profiler_kwargs: forwarded to the base ``Profiler`` (``dirpath``, ``filename``).

    Raises:
        ModuleNotFoundError: ``torch_xla`` is not installed (raised when the profiler is created).

    Example::

        Trainer(accelerator="tpu", profiler=XLAProfiler(port=9012))
    """

    def __init__(self, port: int = 9012, **profiler_kwargs: Any) -> None:
        from torchbolt.accelerators.xla import _require_xla

        _require_xla()
        super().__init__(**profiler_kwargs)
        self.port = port
        self._server: Any = None
        self._regions: dict[str, Any] = {}

    def start(self, action_name: str) -> None:
        import torch_xla.debug.profiler as xp

        if self._server is None:
            self._server = xp.start_server(self.port)
        region = xp.Trace(action_name)
        region.__enter__()
        self._regions[action_name] = region

    def stop(self, action_name: str) -> None:
        region = self._regions.pop(action_name, None)
        if region is not None:
            region.__exit__(None, None, None)
