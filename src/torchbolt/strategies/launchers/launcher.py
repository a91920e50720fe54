"""The ``Launcher`` interface."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch


class Launcher(ABC):
    """Starts the processes of a run and calls the run function in each (or in this one)."""

    @property
    @abstractmethod
    def is_interactive_compatible(self) -> bool:
        """Whether it works in a notebook or REPL (only fork-based launching does)."""

    @abstractmethod
    def launch(self, function: Callable, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        """Start the processes, run ``function(*args, **kwargs)``, and return this process's result."""

    def kill(self, signum: int) -> None:
        """Send ``signum`` to the processes this launcher started."""


def _set_num_threads_if_needed(num_processes: int) -> None:
    """Split the CPU threads between the processes of this node unless ``OMP_NUM_THREADS`` says otherwise.

    Several processes each using every core make CPU training and data loading slower, not faster.
    """
    if "OMP_NUM_THREADS" in os.environ:
        return
    threads = max(1, (os.cpu_count() or 1) // max(1, num_processes))
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
