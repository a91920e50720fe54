"""Helpers that run or print only on the global-zero process.

``rank_zero_only.rank`` is read from the environment at import time (the variables set by
torchrun, SLURM, LSF and MPI launchers) and updated by the strategy once the process group exists.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from typing_extensions import ParamSpec

log = logging.getLogger("torchbolt")

T = TypeVar("T")
P = ParamSpec("P")


def _get_rank() -> int:
    # torchrun/TorchElastic, SLURM, LSF (JSM), Open MPI, in that order of precedence.
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "OMPI_COMM_WORLD_RANK"):
        value = os.environ.get(key)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                continue
    return 0


class _RankZeroOnly:
    """Decorator: the wrapped function runs only when ``rank_zero_only.rank == 0``.

    Example::

        @rank_zero_only
        def print_once(msg):
            print(msg)
    """

    rank: int = _get_rank()

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T | None]:
        @wraps(fn)
        def wrapped_fn(*args: P.args, **kwargs: P.kwargs) -> T | None:
            # read at call time: the strategy sets the rank once the process group exists
            if self.rank == 0:
                return fn(*args, **kwargs)
            return None

        return wrapped_fn


rank_zero_only = _RankZeroOnly()


def _warn(message: str | Warning, stacklevel: int = 2, **kwargs: Any) -> None:
    warnings.warn(message, stacklevel=stacklevel + 1, **kwargs)


@rank_zero_only
def rank_zero_debug(*args: Any, stacklevel: int = 4, **kwargs: Any) -> None:
    """Log at DEBUG level on rank zero only."""
    log.debug(*args, stacklevel=stacklevel, **kwargs)


@rank_zero_only
def rank_zero_info(*args: Any, stacklevel: int = 4, **kwargs: Any) -> None:
    """Log at INFO level on rank zero only."""
    log.info(*args, stacklevel=stacklevel, **kwargs)


@rank_zero_only
def rank_zero_warn(message: str | Warning, stacklevel: int = 4, **kwargs: Any) -> None:
    """Emit a ``UserWarning`` (or ``category=``) on rank zero only."""
    _warn(message, stacklevel=stacklevel, **kwargs)


class TorchboltDeprecationWarning(DeprecationWarning):
    """A Lightning 1.x spelling that still works; the message names the modern spelling."""


# Lightning's name for the same category: `warnings.filterwarnings("ignore", category=LightningDeprecationWarning)`
# in a user script keeps working after the import swap.
LightningDeprecationWarning = TorchboltDeprecationWarning

# Shown by default, unlike plain DeprecationWarning, so users of old tutorials see the new spelling.
warnings.simplefilter("default", category=TorchboltDeprecationWarning)


@rank_zero_only
def rank_zero_deprecation(message: str, stacklevel: int = 5) -> None:
    """Warn once per call site that a spelling is deprecated."""
    _warn(message, stacklevel=stacklevel, category=TorchboltDeprecationWarning)


class PossibleUserWarning(UserWarning):
    """A warning about a setting that is probably, but not certainly, a mistake."""


class WarningCache(set[str]):
    """Emits each distinct message once."""

    def warn(self, message: str, stacklevel: int = 5, **kwargs: Any) -> None:
        if message not in self:
            self.add(message)
            rank_zero_warn(message, stacklevel=stacklevel, **kwargs)

    def info(self, message: str, stacklevel: int = 5, **kwargs: Any) -> None:
        if message not in self:
            self.add(message)
            rank_zero_info(message, stacklevel=stacklevel, **kwargs)


def rank_prefixed_message(message: str, rank: int | None) -> str:
    """``"[rank: 1] message"`` (the message unchanged when ``rank`` is ``None``), for logs from every rank."""
    return message if rank is None else f"[rank: {rank}] {message}"
