"""The ``Profiler`` interface and the do-nothing profiler."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator
from contextlib import contextmanager


class Profiler(ABC):
    """Times named actions (hooks, steps); ``describe()`` prints a summary at the end of a run."""

    _passthrough = False

    def __init__(self, dirpath: str | None = None, filename: str | None = None) -> None:
        self.dirpath = dirpath
        self.filename = filename

    @abstractmethod
    def start(self, action_name: str) -> None:
        """Start timing ``action_name``."""

    @abstractmethod
    def stop(self, action_name: str) -> None:
        """Stop timing ``action_name``."""

    @contextmanager
    def profile(self, action_name: str) -> Generator[None, None, None]:
        """Time the block as ``action_name``.

        Example::

            with trainer.profiler.profile("load_batch"):
                batch = next(it)
        """
        try:
            self.start(action_name)
            yield
        finally:
            self.stop(action_name)

    def summary(self) -> str:
        return ""

    def describe(self) -> None:
        """Print (and write, with ``dirpath``/``filename``) the summary."""
        summary = self.summary()
        if summary:
            print(summary)

    def setup(self, stage: str, local_rank: int | None = None, log_dir: str | None = None) -> None:
        """Called when a run starts."""

    def teardown(self, stage: str | None) -> None:
        """Called when a run ends."""

    def __del__(self) -> None:
        pass


class PassThroughProfiler(Profiler):
    """Profiles nothing; the Trainer skips it entirely on the hot path."""

    _passthrough = True

    def start(self, action_name: str) -> None:
        pass

    def stop(self, action_name: str) -> None:
        pass


__all__ = ["PassThroughProfiler", "Profiler"]
