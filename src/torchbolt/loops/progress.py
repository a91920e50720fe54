"""Loop progress in Lightning's shape (``.total``/``.current``, each with ``ready``/``started``/``processed``/
``completed``), as views over the one owner of each count.

torchbolt keeps one counter per fact: the fit's counters live in :class:`~torchbolt.trainer.states.Progress`,
the batches an evaluation or prediction loop finished in a :class:`BatchCounter` owned by the Trainer. The
classes here hold no counts of their own: every attribute is read from the owner when asked, and an
assignment writes the owner (so ``trainer.fit_loop.epoch_progress.current.completed = 3`` sets
``trainer.current_epoch``). Where Lightning tracks stages torchbolt does not tell apart (a batch that is
"ready" but not yet "processed"), the stages read the same count, and writing any of them sets that count.

Lightning's own progress classes are private (``_Progress``, ``_BatchProgress``...); these are torchbolt's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

#: a tracker's stages, in Lightning's order
STAGES: tuple[str, ...] = ("ready", "started", "processed", "completed")


class BatchCounter:
    """The batches an evaluation or prediction loop finished: in its current (or last) run, and in all runs.

    The one owner of these counts. The loop calls :meth:`start_run` once per run and adds one to
    ``current`` per finished batch; ``total`` is derived.
    """

    __slots__ = ("_before", "current")

    def __init__(self) -> None:
        self._before = 0
        #: batches finished in the current (or last) run
        self.current = 0

    @property
    def total(self) -> int:
        """Batches finished over every run of this loop."""
        return self._before + self.current

    def start_run(self) -> None:
        """A new run starts: its batches count from 0; the previous run's stay in ``total``."""
        self._before += self.current
        self.current = 0

    def clear(self) -> None:
        """Both counts back to 0 (the fit's validation counts restart with each training epoch, as in Lightning:
        ``fit_loop.epoch_loop.val_loop.batch_progress.total`` counts the validation batches of the epoch)."""
        self._before = 0
        self.current = 0

    def set(self, total: int | None = None, current: int | None = None) -> None:
        """Set the counts (``trainer.<stage>_loop.batch_progress.total.completed = n`` and friends).

        Raises:
            ValueError: a count that is not an int >= 0, or a ``total`` below the run's ``current``.
        """
        if current is not None:
            current = _check_count("batch_progress.current", current)
            before = self.total - current if total is None else None
            self.current = current
            if before is not None:
                self._before = max(before, 0)
        if total is not None:
            total = _check_count("batch_progress.total", total)
            if total < self.current:
                raise ValueError(
                    f"`batch_progress.total` ({total}) cannot be below `batch_progress.current` ({self.current}):"
                    " the total counts the current run's batches too."
                )
            self._before = total - self.current


@dataclass
class EvalBatchCounts:
    """The Trainer's batch counters of its non-training loops, one per loop (stable for the Trainer's life)."""

    fit_val: BatchCounter = field(default_factory=BatchCounter)  #: validation inside ``fit``
    validate: BatchCounter = field(default_factory=BatchCounter)
    test: BatchCounter = field(default_factory=BatchCounter)
    predict: BatchCounter = field(default_factory=BatchCounter)


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{name}` must be an int >= 0, got {value!r}.")
    return value


class CountSource(Protocol):
    """Where a :class:`Tracker` reads its counts and writes assignments (kept picklable: no closures)."""

    def read(self, which: str) -> dict[str, int]:
        """The stage counts of ``which`` (``"total"`` or ``"current"``), computed from the owner."""
        ...

    def write(self, which: str, stage: str, value: int) -> None:
        """Set the owner so that ``which.stage`` reads ``value``."""
        ...


class Tracker:
    """One half (``total`` or ``current``) of a progress: its stage counts, read from their owner.

    Args:
        name: the attribute path, for error messages (``"fit_loop.epoch_progress.current"``).
        stages: the stages this tracker has (Lightning's optimizer-step progress has only ``ready`` and
            ``completed``).
        source: reads the counts from the owner and writes assignments to it.
        which: ``"total"`` or ``"current"``.
    """

    __slots__ = ("_name", "_source", "_stages", "_which")

    def __init__(self, name: str, stages: tuple[str, ...], source: CountSource, which: str) -> None:
        self._name = name
        self._stages = stages
        self._source = source
        self._which = which

    def _check_stage(self, stage: str) -> None:
        if stage not in self._stages:
            raise AttributeError(f"`{self._name}` has no `{stage}` count (it has {', '.join(self._stages)}).")

    def _get(self, stage: str) -> int:
        self._check_stage(stage)
        return self._source.read(self._which)[stage]

    def _set(self, stage: str, value: int) -> None:
        self._check_stage(stage)
        self._source.write(self._which, stage, _check_count(f"{self._name}.{stage}", value))

    ready = property(lambda self: self._get("ready"), lambda self, v: self._set("ready", v))
    started = property(lambda self: self._get("started"), lambda self, v: self._set("started", v))
    processed = property(lambda self: self._get("processed"), lambda self, v: self._set("processed", v))
    completed = property(lambda self: self._get("completed"), lambda self, v: self._set("completed", v))

    def state_dict(self) -> dict[str, int]:
        """The stage counts, as Lightning's checkpoints store them."""
        counts = self._source.read(self._which)
        return {stage: counts[stage] for stage in self._stages}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in self.state_dict().items())})"


class ProgressView:
    """A loop's progress: ``total`` (over every run) and ``current`` (this run or epoch), each a :class:`Tracker`.

    ``is_last_batch`` (batch progress of the training epoch only): whether the batch being (or last)
    trained is the epoch's last.
    """

    __slots__ = ("_is_last_batch", "current", "total")

    def __init__(self, name: str, stages: tuple[str, ...], source: CountSource,
                 is_last_batch: Callable[[], bool] | None = None) -> None:
        self.total = Tracker(f"{name}.total", stages, source, "total")
        self.current = Tracker(f"{name}.current", stages, source, "current")
        self._is_last_batch = is_last_batch

    @property
    def is_last_batch(self) -> bool:
        if self._is_last_batch is None:
            raise AttributeError("this progress does not track whether a batch is the last one")
        return self._is_last_batch()

    def state_dict(self) -> dict[str, Any]:
        """``{"total": {...}, "current": {...}}`` (and ``is_last_batch``), as Lightning's checkpoints store it."""
        state: dict[str, Any] = {"total": self.total.state_dict(), "current": self.current.state_dict()}
        if self._is_last_batch is not None:
            state["is_last_batch"] = self._is_last_batch()
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}(total={self.total!r}, current={self.current!r})"


class CounterSource:
    """The counts of the :class:`BatchCounter` that ``counter()`` returns (every stage is the count of finished
    batches); ``counter`` is a bound method, so that the view pickles with its Trainer."""

    __slots__ = ("_counter",)

    def __init__(self, counter: Callable[[], BatchCounter]) -> None:
        self._counter = counter

    def read(self, which: str) -> dict[str, int]:
        return dict.fromkeys(STAGES, getattr(self._counter(), which))

    def write(self, which: str, stage: str, value: int) -> None:
        self._counter().set(**{which: value})


__all__ = ["STAGES", "BatchCounter", "CountSource", "CounterSource", "EvalBatchCounts", "ProgressView", "Tracker"]
