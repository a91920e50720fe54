"""A progress bar drawn with ``rich`` (install ``torchbolt[rich]``)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torchbolt.callbacks.progress import _display
from torchbolt.callbacks.progress.progress_bar import ProgressBar
from torchbolt.utilities.imports import _require, module_available

# checked when a bar is created (a module-level flag, so a missing `rich` can be simulated)
_RICH_AVAILABLE = module_available("rich")

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer


@dataclass
class RichProgressBarTheme:
    """Styles of the bar's parts (any ``rich`` style string), and how metrics are written: ``metrics_format``
    (a format spec for float values, default ``".3f"``) joined by ``metrics_text_delimiter``."""

    description: str = "white"
    progress_bar: str = "#6206E0"
    progress_bar_finished: str = "#6206E0"
    batch_progress: str = "white"
    time: str = "grey54"
    processing_speed: str = "grey70"
    metrics: str = "white"
    metrics_text_delimiter: str = " "
    metrics_format: str = ".3f"


class RichProgressBar(ProgressBar):
    """Training/validation/test/predict progress with ``rich``.

    The bars are updated at most every ``refresh_interval`` seconds, and always at the last batch and
    at the training epoch's end; given a ``refresh_rate``, every ``refresh_rate`` batches instead, as in
    Lightning. The metrics are read (on an accelerator a host synchronization) only at those updates.
    Off a terminal ``rich`` itself draws nothing live: each finished bar is written once.

    Args:
        refresh_rate: update every this many batches; ``0`` disables the bar. Unset (``None``): update
            on the time budget ``refresh_interval``.
        leave: keep finished bars on screen.
        theme: colours of the bar.
        refresh_interval: seconds between two updates when ``refresh_rate`` is unset (default 0.2).

    Raises:
        ModuleNotFoundError: when ``rich`` is not installed (``pip install torchbolt[rich]``).
        MisconfigurationException: on a negative or non-int ``refresh_rate`` or an interval that is not
            a number of seconds > 0.
    """

    def __init__(self, refresh_rate: int | None = None, leave: bool = False,
                 theme: RichProgressBarTheme | None = None, *,
                 refresh_interval: float = _display.DEFAULT_REFRESH_INTERVAL) -> None:
        if not _RICH_AVAILABLE:
            raise ModuleNotFoundError(
                "`RichProgressBar` requires `rich` >= 10.2.2. Install it with `pip install -U rich`"
                " (or `pip install 'torchbolt[rich]'`)."
            )
        super().__init__()
        owner = type(self).__name__
        self._refresh_rate = _display.check_refresh_rate(refresh_rate, owner)
        self._refresh_interval = _display.check_interval(refresh_interval, "refresh_interval", owner)
        self._leave = leave
        self.theme = theme or RichProgressBarTheme()
        self._enabled = True
        self.progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._totals: dict[str, float] = {}
        self._last_outputs: Any = None
        self._train_seen = 0
        self._next_update = 0.0  # time.monotonic() from which the next time-budgeted update may happen

    @property
    def refresh_rate(self) -> int:
        """The ``refresh_rate`` given to the constructor; ``1`` when none was (updates are then time-budgeted)."""
        return self._refresh_rate if self._refresh_rate is not None else 1

    @property
    def refresh_interval(self) -> float:
        """Seconds between two updates when no ``refresh_rate`` was given."""
        return self._refresh_interval

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.refresh_rate > 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def __getstate__(self) -> dict:
        state = dict(vars(self))
        state["progress"] = None
        state["_tasks"] = {}
        return state

    def _start(self) -> None:
        if self.progress is not None or not self.is_enabled:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[progress.description]{task.description}", style=self.theme.description),
            BarColumn(complete_style=self.theme.progress_bar, finished_style=self.theme.progress_bar_finished),
            TextColumn("{task.completed}/{task.fields[total_text]}", style=self.theme.batch_progress),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[metrics]}", style=self.theme.metrics),
            transient=not self._leave,
        )
        self.progress.start()

    def _stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        self.progress = None
        self._tasks = {}

    def _add(self, name: str, description: str, total: float) -> None:
        self._start()
        if self.progress is None:
            return
        if name in self._tasks:
            self.progress.remove_task(self._tasks[name])
        finite = total if math.isfinite(total) else None
        self._totals[name] = total
        self._tasks[name] = self.progress.add_task(
            description, total=finite, metrics="", total_text=str(int(total)) if finite is not None else "?"
        )

    def _due(self, name: str, n: int) -> bool:
        """Whether task ``name`` is updated after batch ``n`` (always at its last batch)."""
        if self.progress is None or name not in self._tasks:
            return False
        if n == self._totals.get(name, math.inf):
            return True
        if self._refresh_rate is not None:
            return n % self._refresh_rate == 0
        now = time.monotonic()
        if now < self._next_update:
            return False
        self._next_update = now + self._refresh_interval
        return True

    def _advance(self, name: str, n: int, metrics: dict[str, Any] | None = None) -> None:
        """Show ``n`` batches done (and ``metrics``) on task ``name``; the caller decided it is due."""
        if self.progress is None or name not in self._tasks:
            return
        fields: dict[str, Any] = {}
        if metrics is not None:
            fmt = self.theme.metrics_format
            fields["metrics"] = self.theme.metrics_text_delimiter.join(
                f"{k}: {v:{fmt}}" if isinstance(v, float) else f"{k}: {v}" for k, v in metrics.items()
            )
        self.progress.update(self._tasks[name], completed=n, **fields)

    def _metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """What an update shows; reading it converts the metrics (a host sync), so call it only to update."""
        metrics = self.get_metrics(trainer, pl_module)
        outputs = self._last_outputs
        if "loss" not in metrics and isinstance(outputs, dict) and outputs.get("loss") is not None:
            # the step's loss was divided by the accumulation factor for backward; show the undivided one
            metrics = {"loss": float(outputs["loss"] * trainer.accumulate_grad_batches), **metrics}
        return metrics

    def on_sanity_check_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._add("train", f"Epoch {trainer.current_epoch}", self.total_train_batches)
        self._last_outputs = None
        self._train_seen = 0
        self._next_update = 0.0  # the first batch updates: the loss shows at once

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # the per-step path: two attribute writes and a clock read unless an update is due
        self._last_outputs = outputs
        n = batch_idx + 1
        self._train_seen = n
        if self._due("train", n):
            self._advance("train", n, self._metrics(trainer, pl_module))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # the final count and metrics (validation's included), also when the total was unknown
        if self.progress is not None and "train" in self._tasks and self._train_seen:
            self._advance("train", self._train_seen, self._metrics(trainer, pl_module))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop()

    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if batch_idx == 0:
            self._current_eval_dataloader_idx = dataloader_idx
            desc = self.sanity_check_description if trainer.sanity_checking else self.validation_description
            self._add("val", desc, self.total_val_batches_current_dataloader)

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._due("val", batch_idx + 1):
            self._advance("val", batch_idx + 1)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.progress is not None and "val" in self._tasks:
            self.progress.remove_task(self._tasks.pop("val"))
        if trainer.state.fn != "fit":
            self._stop()

    def on_test_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if batch_idx == 0:
            self._current_eval_dataloader_idx = dataloader_idx
            self._add("test", self.test_description, self.total_test_batches_current_dataloader)

    def on_test_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._due("test", batch_idx + 1):
            self._advance("test", batch_idx + 1)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop()

    def on_predict_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if batch_idx == 0:
            self._current_eval_dataloader_idx = dataloader_idx
            self._add("predict", self.predict_description, self.total_predict_batches_current_dataloader)

    def on_predict_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._due("predict", batch_idx + 1):
            self._advance("predict", batch_idx + 1)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._stop()

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.console.print(*args, **kwargs)
        else:
            print(*args, **kwargs)


_RICH_COLUMNS = frozenset({
    "BatchesProcessedColumn", "CustomBarColumn", "CustomInfiniteTask", "CustomProgress", "CustomTimeColumn",
    "MetricsTextColumn", "ProcessingSpeedColumn",
})


def __getattr__(name: str) -> Any:
    """The ``rich`` column and progress classes, built on first use (they subclass ``rich``'s own)."""
    if name in _RICH_COLUMNS:
        _require("rich", "rich", name)
        from torchbolt.callbacks.progress import _rich_columns

        return getattr(_rich_columns, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
