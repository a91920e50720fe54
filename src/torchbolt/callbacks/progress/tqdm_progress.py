"""The default progress bar, built on tqdm: a bar on a terminal, plain lines in a log file."""

from __future__ import annotations

import math
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from tqdm import tqdm as _tqdm

from torchbolt.callbacks.progress import _display
from torchbolt.callbacks.progress._display import DisplayMode
from torchbolt.callbacks.progress.progress_bar import ProgressBar

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer

_PAD_SIZE = 5


class Tqdm(_tqdm):
    """tqdm with a fixed-width numeric format so the bar does not jump as values change."""

    @staticmethod
    def format_num(n: int | float | str) -> str:
        should_be_padded = isinstance(n, (float, str))
        if not isinstance(n, str):
            n = _tqdm.format_num(n)
            assert isinstance(n, str)
        if should_be_padded and "e" not in n:
            if "." not in n and len(n) < _PAD_SIZE:
                try:
                    _ = float(n)
                except ValueError:
                    return n
                n += "."
            n += "0" * (_PAD_SIZE - len(n))
        return n


def convert_inf(x: int | float | None) -> int | float | None:
    """tqdm wants ``None`` for an unknown total."""
    if x is None or math.isinf(x) or math.isnan(x):
        return None
    return x


def _bar_property(name: str, doc: str) -> Any:
    """A property for the bar kept in ``_<name>``: ``TypeError`` while it is not made yet; assignable."""
    attribute = f"_{name}"

    def get(self: TQDMProgressBar) -> Tqdm:
        bar: Tqdm | None = getattr(self, attribute)
        if bar is None:
            raise TypeError(f"The `{type(self).__name__}.{attribute}` reference has not been set yet.")
        return bar

    def set_(self: TQDMProgressBar, bar: Tqdm) -> None:
        setattr(self, attribute, bar)

    return property(get, set_, doc=doc)


class TQDMProgressBar(ProgressBar):
    """Training, validation, test and predict progress with the ``prog_bar`` metrics and the loss.

    The Trainer's default bar (``mode="auto"``) fits where the output goes: on a terminal (or in Jupyter) the
    bars redraw in place; anywhere else (a file, a pipe, a SLURM or CI log) training writes one plain line
    every ``plain_interval`` seconds and at each epoch's end, such as
    ``epoch 3/20 | step 1200/5000 | 12.3 it/s | 0:01:40 | train_loss=0.12 val_acc=0.97``, and a
    stand-alone ``validate``/``test``/``predict`` writes one summary line when it ends (validation during
    ``fit`` writes nothing of its own: its metrics are on the epoch's line). ``mode="bar"`` or
    ``mode="plain"`` forces one display. A bar built without a ``mode`` (``TQDMProgressBar(refresh_rate=10)``
    in ``callbacks``) draws a bar wherever it writes, as in Lightning. Without a ``mode`` or with
    ``"auto"``, the environment variable ``TORCHBOLT_PROGRESS=bar|plain|auto`` decides first. Only global
    rank 0 writes.

    The bar redraws at most every ``refresh_interval`` seconds, and always on the first and last batch
    of an epoch and at the epoch's end (the final numbers). Given a ``refresh_rate``, it redraws every
    ``refresh_rate`` batches instead, as in Lightning. Metrics are read (``get_metrics``, the conversion of
    logged tensors to numbers: on an accelerator a host synchronization) only when the bar redraws or a
    line is written, never on the other steps.

    Args:
        refresh_rate: redraw every this many batches; ``0`` disables the bar. Unset (``None``): redraw
            on the time budget ``refresh_interval``. Plain lines ignore it (except ``0``).
        process_position: the line of the bar, for several concurrent trainings.
        leave: keep the finished epoch bars on screen.
        mode: ``"auto"`` (a bar on a terminal, plain lines elsewhere: the Trainer's default bar), ``"bar"``
            or ``"plain"``; unset (``None``): a bar, as in Lightning. Unset or ``"auto"``,
            ``TORCHBOLT_PROGRESS`` may choose instead.
        refresh_interval: seconds between two redraws of a bar when ``refresh_rate`` is unset (default 0.2).
        plain_interval: seconds between two plain lines within an epoch (default 30).

    Raises:
        MisconfigurationException: on a negative or non-int ``refresh_rate``, an unknown ``mode``, an
            interval that is not a number of seconds > 0, or (when the bar is set up) an unknown value
            of ``TORCHBOLT_PROGRESS``.
    """

    BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"

    def __init__(
        self,
        refresh_rate: int | None = None,
        process_position: int = 0,
        leave: bool = False,
        *,
        mode: str | None = None,
        refresh_interval: float = _display.DEFAULT_REFRESH_INTERVAL,
        plain_interval: float = _display.DEFAULT_PLAIN_INTERVAL,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self._refresh_rate = _display.check_refresh_rate(refresh_rate, owner)
        miniters = os.environ.get("TQDM_MINITERS")
        if miniters:
            # tqdm's own setting for the fewest iterations between redraws raises the rate, as in Lightning
            self._refresh_rate = max(int(float(miniters)), self._refresh_rate if self._refresh_rate is not None else 1)
        self._mode = None if mode is None else _display.check_mode(mode, owner)
        self._refresh_interval = _display.check_interval(refresh_interval, "refresh_interval", owner)
        self._plain_interval = _display.check_interval(plain_interval, "plain_interval", owner)
        self._process_position = process_position
        self._enabled = True
        self._leave = leave
        self._display: DisplayMode | None = None  # decided at `setup`, from `mode` and the output stream
        self._train_progress_bar: Tqdm | None = None
        self._val_progress_bar: Tqdm | None = None
        self._test_progress_bar: Tqdm | None = None
        self._predict_progress_bar: Tqdm | None = None
        # the last training outputs: the shown loss is computed from them only when shown
        self._last_outputs: Any = None
        self._train_seen = 0  # batches done in the current training epoch
        self._train_total: int | float = math.inf  # batches in the current training epoch
        self._next_draw = 0.0  # time.perf_counter() from which the next time-budgeted redraw may happen
        # plain lines
        self._next_line = 0.0
        self._fit_start = 0.0
        self._epoch_start = 0.0
        self._epoch_train_seconds: float | None = None
        self._epoch_reported = False
        self._total_steps: int | float = math.inf
        self._eval_start = 0.0
        self._eval_seen = 0

    def __getstate__(self) -> dict:
        # the tqdm objects cannot be pickled (ddp_spawn)
        return {k: v if not isinstance(v, _tqdm) else None for k, v in vars(self).items()}

    @property
    def refresh_rate(self) -> int:
        """The ``refresh_rate`` given to the constructor; ``1`` when none was (redraws are then time-budgeted)."""
        return self._refresh_rate if self._refresh_rate is not None else 1

    @property
    def refresh_interval(self) -> float:
        """Seconds between two redraws of a bar when no ``refresh_rate`` was given."""
        return self._refresh_interval

    @property
    def plain_interval(self) -> float:
        """Seconds between two plain lines within an epoch."""
        return self._plain_interval

    @property
    def mode(self) -> str | None:
        """The ``mode`` given to the constructor: ``"auto"``, ``"bar"``, ``"plain"`` or ``None`` (none given)."""
        return self._mode

    @property
    def display_mode(self) -> DisplayMode:
        """What is drawn: ``"bar"`` or ``"plain"`` (decided when the Trainer sets the bar up)."""
        if self._display is None:
            self._display = _display.resolve_mode(self._mode, sys.stdout)
        return self._display

    @property
    def process_position(self) -> int:
        return self._process_position

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.refresh_rate > 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # decided per run: the same bar may be used from a terminal and then from a redirected stream
        self._display = _display.resolve_mode(self._mode, sys.stdout)

    # Lightning's four bar properties: read (``TypeError`` before the bar exists) and replaced
    train_progress_bar = _bar_property("train_progress_bar", "The training bar.")
    val_progress_bar = _bar_property("val_progress_bar", "The validation (or sanity check) bar: the last one made,"
                                     " closed once its run ended.")
    test_progress_bar = _bar_property("test_progress_bar", "The test bar: the last one made, closed once its run ended.")
    predict_progress_bar = _bar_property("predict_progress_bar", "The predict bar: the last one made, closed once"
                                         " its run ended.")

    def _bar(self, desc: str, position: int, leave: bool) -> Tqdm:
        # plain lines keep (disabled) tqdm objects, so code reading `train_progress_bar` still works
        disable = self.is_disabled or self.display_mode == "plain"
        return Tqdm(desc=desc, position=2 * self.process_position + position, disable=disable,
                    leave=leave, dynamic_ncols=True, file=sys.stdout, smoothing=0, bar_format=self.BAR_FORMAT)

    def init_sanity_tqdm(self) -> Tqdm:
        return self._bar(self.sanity_check_description, 0, False)

    def init_train_tqdm(self) -> Tqdm:
        return self._bar(self.train_description, 0, True)

    def init_validation_tqdm(self) -> Tqdm:
        # the validation bar sits below the training bar while fitting
        has_main_bar = self.trainer.state.fn == "fit"
        return self._bar(self.validation_description, int(has_main_bar), not has_main_bar)

    def init_test_tqdm(self) -> Tqdm:
        return self._bar(self.test_description, 0, True)

    def init_predict_tqdm(self) -> Tqdm:
        return self._bar(self.predict_description, 0, True)

    def _should_update(self, current: int, total: int | float) -> bool:
        """Whether the bar redraws after batch ``current``: always at the last batch; else every
        ``refresh_rate`` batches when one was given, or once ``refresh_interval`` seconds have passed."""
        # ordered for the common step, which returns after one clock read
        if current != total:
            rate = self._refresh_rate
            if rate is None:
                now = time.perf_counter()
                if now < self._next_draw:
                    return False
                self._next_draw = now + self._refresh_interval
            elif rate == 0 or current % rate:
                return False
        return self.is_enabled

    def _postfix(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """What a redraw shows; reading it converts the metrics (a host sync), so call it only to draw."""
        metrics = self.get_metrics(trainer, pl_module)
        outputs = self._last_outputs
        if "loss" not in metrics and isinstance(outputs, dict) and outputs.get("loss") is not None:
            # the step's loss was divided by the accumulation factor for backward; show the undivided one
            metrics = {"loss": float(outputs["loss"] * trainer.accumulate_grad_batches), **metrics}
        return metrics

    # -- plain lines
    def _write_line(self, line: str) -> None:
        print(line, file=sys.stdout, flush=True)

    def _write_train_line(self, trainer: Trainer, pl_module: LightningModule, now: float,
                          epoch_seconds: float | None = None) -> None:
        """``epoch e/E | step s/S | r it/s | elapsed | metrics`` (1-based epoch, optimizer steps)."""
        epoch = trainer.current_epoch + 1
        max_epochs = trainer.max_epochs
        # with `max_steps` the step count is the limit that matters; `max_epochs` is then a default
        show_max_epochs = max_epochs is not None and max_epochs > 0 and trainer.max_steps == -1
        parts = [
            f"epoch {epoch}/{max_epochs}" if show_max_epochs else f"epoch {epoch}",
            f"step {_display.count_text(trainer.global_step, self._total_steps)}",
            _display.rate_text(self._train_seen, epoch_seconds if epoch_seconds is not None
                               else now - self._epoch_start),
            _display.format_duration(now - self._fit_start),
        ]
        metrics = _display.format_metrics(self._postfix(trainer, pl_module))
        if metrics:
            parts.append(metrics)
        self._write_line(" | ".join(parts))
        self._next_line = now + self._plain_interval

    def _eval_begin(self) -> None:
        self._eval_start = time.perf_counter()
        self._eval_seen = 0

    def _write_eval_line(self, description: str, totals: list[int | float]) -> None:
        """``Testing | 12/12 batches | 30.1 it/s | 0:00:00``, once at the end of a stand-alone run."""
        if not self.is_enabled:
            return
        seconds = time.perf_counter() - self._eval_start
        total = sum(totals) if totals else math.inf
        self._write_line(" | ".join([
            description,
            f"{_display.count_text(self._eval_seen, total)} batches",
            _display.rate_text(self._eval_seen, seconds),
            _display.format_duration(seconds),
        ]))

    # -- sanity check
    def on_sanity_check_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._val_progress_bar = self.init_sanity_tqdm()
        self._train_progress_bar = Tqdm(disable=True)  # a placeholder so the line is kept

    def on_sanity_check_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._train_progress_bar is not None:
            self._train_progress_bar.close()
        if self._val_progress_bar is not None:
            self._val_progress_bar.close()
        self._train_progress_bar = None
        self._val_progress_bar = None

    # -- training
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._train_progress_bar = self.init_train_tqdm()
        self._fit_start = time.perf_counter()
        self._next_line = self._fit_start + self._plain_interval
        try:
            self._total_steps = trainer.estimated_stepping_batches
        except Exception:  # the count is a nicety of the plain line; never fail a fit over it
            self._total_steps = math.inf
        if not pl_module.automatic_optimization and len(trainer.optimizers) > 1:
            # each optimizer's step counts (a GAN steps two per batch): the estimate, one per batch, is no total
            self._total_steps = math.inf

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        bar = self.train_progress_bar
        self._train_total = self.total_train_batches
        bar.reset(convert_inf(self._train_total))
        bar.initial = 0
        bar.set_description(f"Epoch {trainer.current_epoch}")
        self._last_outputs = None
        self._train_seen = 0
        self._next_draw = 0.0  # the first batch redraws: the loss shows at once
        self._epoch_start = time.perf_counter()
        self._epoch_train_seconds = None
        self._epoch_reported = False

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # the per-step path: two attribute writes and a clock read unless a redraw is due
        self._last_outputs = outputs
        n = batch_idx + 1
        self._train_seen = n
        if self._display == "plain":
            now = time.perf_counter()
            if n == self._train_total:
                self._epoch_train_seconds = now - self._epoch_start  # the rate excludes the validation after it
            elif now >= self._next_line and self.is_enabled:
                self._write_train_line(trainer, pl_module, now)
            return
        if n != self._train_total and self._refresh_rate is None and time.perf_counter() < self._next_draw:
            return  # the common step: no redraw due (what `_should_update` says first, without the call)
        if self._should_update(n, self._train_total):
            bar = self.train_progress_bar
            bar.n = n
            bar.set_postfix(self._postfix(trainer, pl_module), refresh=False)
            bar.refresh()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._display == "plain":
            if self.is_enabled and self._train_seen:
                self._write_train_line(trainer, pl_module, time.perf_counter(), self._epoch_train_seconds)
            self._epoch_reported = True
            return
        if self._train_progress_bar is not None and not self.train_progress_bar.disable:
            bar = self.train_progress_bar
            bar.n = self._train_seen  # the final count, also when the total was unknown
            bar.set_postfix(self._postfix(trainer, pl_module))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._display == "plain" and not self._epoch_reported and self._train_seen and self.is_enabled:
            # the fit stopped inside an epoch (max_steps, max_time, should_stop): report where it stopped
            self._write_train_line(trainer, pl_module, time.perf_counter())
            self._epoch_reported = True
        if self._train_progress_bar is not None:
            self._train_progress_bar.close()

    # -- validation
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val_progress_bar = self.init_validation_tqdm()
        self._eval_begin()

    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if batch_idx == 0 and self._val_progress_bar is not None:
            self._current_eval_dataloader_idx = dataloader_idx
            bar = self._val_progress_bar
            bar.reset(convert_inf(self.total_val_batches_current_dataloader))
            bar.initial = 0
            desc = self.sanity_check_description if trainer.sanity_checking else self.validation_description
            bar.set_description(f"{desc} DataLoader {dataloader_idx}" if self._multiple_val(trainer) else desc)

    def _multiple_val(self, trainer: Trainer) -> bool:
        totals = trainer.num_sanity_val_batches if trainer.sanity_checking else trainer.num_val_batches
        return len(totals) > 1

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._display == "plain":
            self._eval_seen += 1
            return
        bar = self._val_progress_bar
        n = batch_idx + 1
        if bar is not None and self._should_update(n, bar.total or math.inf):
            bar.n = n
            bar.refresh()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._val_progress_bar is not None and not trainer.sanity_checking:
            self._val_progress_bar.close()  # kept (closed) for code that reads it after the run, as in Lightning
        self._current_eval_dataloader_idx = None
        fitting = trainer.state.fn == "fit"
        if self._display == "plain":
            # inside fit the epoch's line carries the validation metrics; a stand-alone run gets one line
            if not fitting and not trainer.sanity_checking:
                self._write_eval_line(self.validation_description, trainer.num_val_batches)
            return
        if self._train_progress_bar is not None and fitting and not trainer.sanity_checking:
            self._train_progress_bar.set_postfix(self._postfix(trainer, pl_module))

    # -- test
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._test_progress_bar = self.init_test_tqdm()
        self._eval_begin()

    def on_test_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if batch_idx == 0 and self._test_progress_bar is not None:
            self._current_eval_dataloader_idx = dataloader_idx
            self._test_progress_bar.reset(convert_inf(self.total_test_batches_current_dataloader))
            self._test_progress_bar.initial = 0
            if len(trainer.num_test_batches) > 1:
                self._test_progress_bar.set_description(f"{self.test_description} DataLoader {dataloader_idx}")

    def on_test_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._display == "plain":
            self._eval_seen += 1
            return
        bar = self._test_progress_bar
        n = batch_idx + 1
        if bar is not None and self._should_update(n, bar.total or math.inf):
            bar.n = n
            bar.refresh()

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._test_progress_bar is not None:
            self._test_progress_bar.close()
        self._current_eval_dataloader_idx = None
        if self._display == "plain":
            self._write_eval_line(self.test_description, trainer.num_test_batches)

    # -- predict
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._predict_progress_bar = self.init_predict_tqdm()
        self._eval_begin()

    def on_predict_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if batch_idx == 0 and self._predict_progress_bar is not None:
            self._current_eval_dataloader_idx = dataloader_idx
            self._predict_progress_bar.reset(convert_inf(self.total_predict_batches_current_dataloader))
            self._predict_progress_bar.initial = 0

    def on_predict_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._display == "plain":
            self._eval_seen += 1
            return
        bar = self._predict_progress_bar
        n = batch_idx + 1
        if bar is not None and self._should_update(n, bar.total or math.inf):
            bar.n = n
            bar.refresh()

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._predict_progress_bar is not None:
            self._predict_progress_bar.close()
        self._current_eval_dataloader_idx = None
        if self._display == "plain":
            self._write_eval_line(self.predict_description, trainer.num_predict_batches)

    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        # the first bar that is shown; compared with None, since a tqdm bar without a total has no truth value
        bars = (self._train_progress_bar, self._val_progress_bar, self._test_progress_bar, self._predict_progress_bar)
        active = next((bar for bar in bars if bar is not None and not bar.disable), None)
        if active is not None:
            active.write(sep.join(map(str, args)), **kwargs)
        else:
            print(*args, sep=sep, **kwargs)
