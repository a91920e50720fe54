"""``Timer``: measure time spent in each stage and stop training after a duration."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from torchbolt.callbacks.callback import Callback
from torchbolt.utilities.enums import LightningEnum
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import rank_zero_info

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer

_STAGES = ("train", "validate", "test", "predict")


class Interval(LightningEnum):
    """When ``Timer`` checks the time: after every training ``step`` or at each ``epoch``'s end."""

    step = "step"
    epoch = "epoch"


def _parse_duration(duration: str | timedelta | dict[str, int] | None) -> timedelta | None:
    """``"DD:HH:MM:SS"``, a ``timedelta`` or ``{"days": .., "hours": ..}`` as a ``timedelta``."""
    if duration is None:
        return None
    if isinstance(duration, timedelta):
        return duration
    if isinstance(duration, str):
        match = re.fullmatch(r"(\d+):(\d\d):(\d\d):(\d\d)", duration.strip())
        if match is None:
            raise MisconfigurationException(
                f"`Trainer(max_time={duration!r})` / `Timer(duration=...)`: a string must be 'DD:HH:MM:SS'"
                " (the format DD:HH:MM:SS, e.g. '00:12:00:00' for 12 hours)."
            )
        days, hours, minutes, seconds = (int(g) for g in match.groups())
        return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if isinstance(duration, dict):
        try:
            return timedelta(**duration)
        except TypeError as e:
            raise MisconfigurationException(
                f"`max_time={duration!r}`: dict keys must be timedelta arguments (days, hours, minutes, seconds)."
            ) from e
    raise MisconfigurationException(
        f"`max_time`/`duration` must be a 'DD:HH:MM:SS' string, a timedelta or a dict, got {type(duration).__name__}."
    )


class Timer(Callback):
    """Track the time spent in training, validation and testing, and stop fit after ``duration``.

    The check runs after every training batch (``interval="step"``) or epoch (``"epoch"``); the
    time already spent is saved in checkpoints, so a resumed run keeps counting from there.

    Args:
        duration: ``"DD:HH:MM:SS"``, a ``timedelta`` or a dict of its arguments; ``None`` only measures.
        interval: ``"step"`` or ``"epoch"``.
        verbose: print when training is stopped.

    Example::

        timer = Timer(duration="00:12:00:00")
        trainer = Trainer(callbacks=[timer])
        trainer.fit(model)
        timer.time_elapsed("train")
    """

    def __init__(
        self,
        duration: str | timedelta | dict[str, int] | None = None,
        interval: str = "step",
        verbose: bool = True,
    ) -> None:
        super().__init__()
        if interval not in ("step", "epoch"):
            raise MisconfigurationException(
                f"`Timer(interval={interval!r})`: Unsupported parameter value; use 'step' or 'epoch'.")
        parsed = _parse_duration(duration)
        # the limit in seconds (as Lightning stores it)
        self._duration: float | None = parsed.total_seconds() if parsed is not None else None
        self._duration_seconds = self._duration
        self._interval = interval
        self._verbose = verbose
        self._start_time: dict[str, float | None] = dict.fromkeys(_STAGES)
        self._end_time: dict[str, float | None] = dict.fromkeys(_STAGES)
        self._offset: float = 0.0

    def start_time(self, stage: str = "train") -> float | None:
        return self._start_time[stage]

    def end_time(self, stage: str = "train") -> float | None:
        return self._end_time[stage]

    def time_elapsed(self, stage: str = "train") -> float:
        """Seconds spent in ``stage`` (training time includes that of resumed runs)."""
        start = self._start_time[stage]
        end = self._end_time[stage]
        offset = self._offset if stage == "train" else 0.0
        if start is None:
            return offset
        if end is None:
            return time.monotonic() - start + offset
        return end - start + offset

    def time_remaining(self, stage: str = "train") -> float | None:
        if self._duration_seconds is None:
            return None
        return self._duration_seconds - self.time_elapsed(stage)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start_time["train"] = time.monotonic()
        self._end_time["train"] = None

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end_time["train"] = time.monotonic()

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start_time["validate"] = time.monotonic()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end_time["validate"] = time.monotonic()

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start_time["test"] = time.monotonic()

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end_time["test"] = time.monotonic()

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start_time["predict"] = time.monotonic()

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end_time["predict"] = time.monotonic()

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # checked once before training, whatever the interval: a zero limit, or a resumed run whose
        # restored elapsed time already reached the limit, stops before the first batch
        if self._duration_seconds is not None:
            self._check_time_remaining(trainer)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._interval == "step" and self._duration_seconds is not None:
            self._check_time_remaining(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._interval == "epoch" and self._duration_seconds is not None:
            self._check_time_remaining(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"time_elapsed": {stage: self.time_elapsed(stage) for stage in _STAGES}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._offset = float(state_dict.get("time_elapsed", {}).get("train", 0.0))

    def _check_time_remaining(self, trainer: Trainer) -> None:
        assert self._duration_seconds is not None
        should_stop = self.time_elapsed("train") >= self._duration_seconds
        should_stop = trainer.strategy.reduce_boolean_decision(should_stop, all=False)
        if should_stop and not trainer.should_stop:
            trainer.should_stop = True
            if self._verbose:
                elapsed = timedelta(seconds=int(self.time_elapsed("train")))
                rank_zero_info(f"Time limit reached. Elapsed time is {elapsed}. Signaling Trainer to stop.")
