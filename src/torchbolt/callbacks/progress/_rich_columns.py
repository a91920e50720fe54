"""``rich`` columns and progress classes with Lightning's names, for building custom rich progress displays.

Imported on first access to one of these names from ``torchbolt.callbacks.progress.rich_progress`` (so
that importing that module does not need ``rich``). Each column renders one part of a batch-progress
line; a task whose total is unknown (an iterable without length) has ``total=float("inf")``.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID
from rich.progress_bar import ProgressBar as _RichBar
from rich.style import Style
from rich.text import Text


class CustomBarColumn(BarColumn):
    """A bar that pulses (instead of filling) while the total is unknown or infinite."""

    def render(self, task: Task) -> _RichBar:
        total = task.total
        known = total is not None and math.isfinite(total)
        return _RichBar(
            total=max(0.0, float(total)) if known else None,  # type: ignore[arg-type]
            completed=max(0.0, task.completed),
            width=None if self.bar_width is None else max(1, self.bar_width),
            pulse=not task.started or not known,
            animation_time=task.get_time(),
            style=self.style, complete_style=self.complete_style, finished_style=self.finished_style,
            pulse_style=self.pulse_style,
        )


class CustomInfiniteTask(Task):
    """A task without an end: it never estimates a remaining time."""

    @property
    def time_remaining(self) -> float | None:
        return None


class CustomProgress(Progress):
    """A ``rich.progress.Progress`` whose ``add_task(total=float('inf'))`` makes a :class:`CustomInfiniteTask`."""

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0, completed: int = 0,
                 visible: bool = True, **fields: Any) -> TaskID:
        if total is None or math.isfinite(total):
            return super().add_task(description, start=start, total=total, completed=completed, visible=visible,
                                    **fields)
        with self._lock:
            task = CustomInfiniteTask(self._task_index, description, total, completed, visible=visible,
                                      fields=fields, _get_time=self.get_time, _lock=self._lock)
            return self.add_custom_task(task, start=start)

    def add_custom_task(self, task: CustomInfiniteTask, start: bool = True) -> TaskID:
        """Register an already built task (its id must be the next free one)."""
        with self._lock:
            self._tasks[self._task_index] = task
            if start:
                self.start_task(self._task_index)
            new_id = self._task_index
            self._task_index = TaskID(int(self._task_index) + 1)
        self.refresh()
        return new_id


class CustomTimeColumn(ProgressColumn):
    """``elapsed • remaining`` as ``H:MM:SS`` (``-:--:--`` while the remaining time is unknown)."""

    max_refresh = 0.5  # seconds: a clock does not need redrawing on every batch

    def __init__(self, style: str | Style) -> None:
        self.style = style
        super().__init__()

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        remaining = task.time_remaining
        elapsed_text = "-:--:--" if elapsed is None else str(timedelta(seconds=int(elapsed)))
        remaining_text = "-:--:--" if remaining is None else str(timedelta(seconds=int(remaining)))
        return Text(f"{elapsed_text} • {remaining_text}", style=self.style)


class BatchesProcessedColumn(ProgressColumn):
    """``completed/total`` batches (``completed/--`` when the total is unknown)."""

    def __init__(self, style: str | Style) -> None:
        self.style = style
        super().__init__()

    def render(self, task: Task) -> Text:
        total = task.total
        total_text = str(int(total)) if total is not None and math.isfinite(total) else "--"
        return Text(f"{int(task.completed)}/{total_text}", style=self.style)


class ProcessingSpeedColumn(ProgressColumn):
    """Batches per second, ``12.34it/s`` (``0.00it/s`` before a speed is known)."""

    def __init__(self, style: str | Style) -> None:
        self.style = style
        super().__init__()

    def render(self, task: Task) -> Text:
        speed = task.speed
        return Text(f"{speed if speed is not None else 0.0:>.2f}it/s", style=self.style)


class MetricsTextColumn(ProgressColumn):
    """The metrics last given to :meth:`update`, as ``name: value`` joined by ``text_delimiter``.

    Values that are not strings are formatted with ``metrics_format`` (e.g. ``".3f"``) when they
    accept it. ``render`` only reads what :meth:`update` stored, so drawing never touches the
    device. ``trainer`` is kept for code that reads it (``column._trainer``).
    """

    def __init__(self, trainer: Any, style: str | Style, text_delimiter: str = " ",
                 metrics_format: str = ".3f") -> None:
        self._trainer = trainer
        self._metrics: dict[str, Any] = {}
        self._style = style
        self._text_delimiter = text_delimiter
        self._metrics_format = metrics_format
        super().__init__()

    def update(self, metrics: dict[str, Any]) -> None:
        """Store the metrics to show from the next redraw on."""
        self._metrics = dict(metrics)

    def _texts(self) -> list[str]:
        texts = []
        for name, value in self._metrics.items():
            if not isinstance(value, str):
                try:
                    value = f"{value:{self._metrics_format}}"
                except (TypeError, ValueError):
                    value = str(value)
            texts.append(f"{name}: {value}")
        return texts

    def render(self, task: Task) -> Text:
        return Text(self._text_delimiter.join(self._texts()), justify="left", style=self._style)


__all__ = [
    "BatchesProcessedColumn", "CustomBarColumn", "CustomInfiniteTask", "CustomProgress", "CustomTimeColumn",
    "MetricsTextColumn", "ProcessingSpeedColumn",
]
