"""The ``Profiler`` interface, the do-nothing profiler, and the helpers that put actions on the hot path.

The Trainer decides once per run whether a profiler is active. Without one, no hook, step or
dataloader call is wrapped: the loops run exactly the code they run without profiling support.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from torchbolt.utilities.cloud_io import get_filesystem


class Profiler(ABC):
    """Times named actions (hooks, step phases); :meth:`describe` reports at the end of a run.

    Args:
        dirpath: directory of the report file (default: ``trainer.log_dir`` when ``filename`` is set).
        filename: write the report to ``<dirpath>/<stage>-<filename>.txt`` instead of printing it.

    Example::

        class WallClock(Profiler):
            def start(self, action_name): ...
            def stop(self, action_name): ...

        Trainer(profiler=WallClock())
    """

    _passthrough = False

    def __init__(self, dirpath: str | Path | None = None, filename: str | None = None) -> None:
        self.dirpath = dirpath
        self.filename = filename
        self._output_file: TextIO | None = None
        self._write_stream: Callable[[str], Any] | None = None
        self._local_rank: int | None = None
        self._stage: str | None = None
        # set by the Trainer for the profilers that need the module (PyTorchProfiler's module names)
        self._lightning_module: Any = None

    @abstractmethod
    def start(self, action_name: str) -> None:
        """Start timing ``action_name``."""

    @abstractmethod
    def stop(self, action_name: str) -> None:
        """Stop timing ``action_name``."""

    @contextmanager
    def profile(self, action_name: str) -> Generator[str, None, None]:
        """Time the block as ``action_name``.

        Example::

            with trainer.profiler.profile("load_batch"):
                batch = next(it)
        """
        try:
            self.start(action_name)
            yield action_name
        finally:
            self.stop(action_name)

    def summary(self) -> str:
        """The report text ("" when there is nothing to report)."""
        return ""

    def describe(self) -> None:
        """Print the summary (rank zero), or write it to ``<dirpath>/<stage>-<filename>[-<rank>].txt``."""
        self._prepare_streams()
        summary = self.summary()
        if summary and self._write_stream is not None:
            self._write_stream(summary)
        if self._output_file is not None:
            self._output_file.flush()
        self.teardown(stage=self._stage)

    def setup(self, stage: str, local_rank: int | None = None, log_dir: str | None = None) -> None:
        """Called when a run starts: ``stage`` is ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``."""
        self._stage = stage
        self._local_rank = local_rank
        self.dirpath = self.dirpath or log_dir

    def teardown(self, stage: str | None) -> None:
        """Called when a run ends: closes the report file."""
        self._write_stream = None
        if self._output_file is not None:
            self._output_file.close()
            self._output_file = None

    @property
    def local_rank(self) -> int:
        return 0 if self._local_rank is None else self._local_rank

    # ------------------------------------------------------------------ report helpers
    def _prepare_filename(self, action_name: str | None = None, extension: str = ".txt",
                          split_token: str = "-") -> str:
        parts = [p for p in (self._stage, self.filename) if p]
        if self._local_rank is not None:
            parts.append(str(self._local_rank))
        if action_name is not None:
            parts.append(action_name)
        return split_token.join(parts) + extension

    def _prepare_streams(self) -> None:
        if self._write_stream is not None:
            return
        if self.filename and self.dirpath:
            filepath = os.path.join(self.dirpath, self._prepare_filename())
            fs = get_filesystem(filepath)
            fs.makedirs(str(self.dirpath), exist_ok=True)
            self._output_file = fs.open(filepath, "a")
            self._write_stream = self._output_file.write
        else:
            self._write_stream = self._print_rank_zero

    def _print_rank_zero(self, text: str) -> None:
        if self._local_rank in (None, 0):
            print(text)

    def _stats_to_str(self, stats: dict[str, str]) -> str:
        stage = f"{self._stage.upper()} " if self._stage is not None else ""
        output = [stage + "Profiler Report"]
        for action, value in stats.items():
            header = f"Profile stats for: {action}"
            if self._local_rank is not None:
                header += f" rank: {self._local_rank}"
            output.append(header)
            output.append(value)
        return os.linesep.join(output)

    def __del__(self) -> None:
        # at interpreter shutdown the file may already be gone
        with contextlib.suppress(Exception):
            self.teardown(stage=self._stage)


class PassThroughProfiler(Profiler):
    """Profiles nothing; the Trainer skips it entirely on the hot path."""

    _passthrough = True

    def start(self, action_name: str) -> None:
        pass

    def stop(self, action_name: str) -> None:
        pass


def profiled(fn: Callable, action: str, profiler: Profiler) -> Callable:
    """``fn`` timed as ``action`` on every call (build it once, when a run starts, never per call)."""
    start, stop = profiler.start, profiler.stop

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start(action)
        try:
            return fn(*args, **kwargs)
        finally:
            stop(action)

    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper


class ProfiledIterator(Iterator[Any]):
    """Wraps an iterator so each ``next()`` is timed as ``action`` (the dataloader fetch of a step)."""

    __slots__ = ("_action", "_iterator", "_start", "_stop")

    def __init__(self, iterator: Iterator[Any], profiler: Profiler, action: str) -> None:
        self._iterator = iterator
        self._action = action
        self._start, self._stop = profiler.start, profiler.stop

    def __iter__(self) -> ProfiledIterator:
        return self

    def __next__(self) -> Any:
        self._start(self._action)
        try:
            return next(self._iterator)
        finally:
            self._stop(self._action)


def profiled_iter(iterable: Iterable[Any], profiler: Profiler | None, action: str) -> Iterator[Any]:
    """``iter(iterable)``, timed per ``next()`` when ``profiler`` is set (decided once per loop)."""
    iterator = iter(iterable)
    return iterator if profiler is None else ProfiledIterator(iterator, profiler, action)





_STRATEGY_ACTIONS = ("training_step", "validation_step", "test_step", "predict_step", "backward", "batch_to_device")


def instrument_strategy(strategy: Any, profiler: Profiler) -> None:
    """Time the strategy's step methods as ``[Strategy]<Class>.<method>`` (instance attributes, set once).

    Only called when a profiler is active, so an unprofiled run calls the plain methods.
    """
    for name in _STRATEGY_ACTIONS:
        current = getattr(strategy, name, None)
        if current is None or getattr(current, "_torchbolt_profiler", None) is profiler:
            continue
        wrapper = profiled(current, f"[Strategy]{type(strategy).__name__}.{name}", profiler)
        wrapper._torchbolt_profiler = profiler  # type: ignore[attr-defined]
        setattr(strategy, name, wrapper)


def instrument_optimizers(strategy: Any, profiler: Profiler) -> None:
    """Time each ``optimizer.step()`` (closure included) as ``optimizer_step``, as Lightning's profiles do."""
    for optimizer in getattr(strategy, "_lightning_optimizers", []):
        step_fn = optimizer._step_fn
        if getattr(step_fn, "_torchbolt_profiler", None) is profiler:
            continue
        wrapper = profiled(step_fn, "optimizer_step", profiler)
        wrapper._torchbolt_profiler = profiler  # type: ignore[attr-defined]
        optimizer._step_fn = wrapper

__all__ = [
    "PassThroughProfiler",
    "ProfiledIterator",
    "Profiler",
    "instrument_optimizers",
    "instrument_strategy",
    "profiled",
    "profiled_iter",
]
