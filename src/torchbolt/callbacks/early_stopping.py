"""``EarlyStopping``: stop fitting when a monitored metric stops improving (or crosses a threshold)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from torchbolt.callbacks import _arguments
from torchbolt.callbacks.callback import Callback
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import WarningCache
from torchbolt.utilities.states import TrainerFn

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer

log = logging.getLogger(__name__)
_warning_cache = WarningCache()


def _check_arguments(monitor: Any, min_delta: Any, patience: Any, strict: Any, check_finite: Any,
                     stopping_threshold: Any, divergence_threshold: Any) -> None:
    """Reject argument types that would only fail (or silently misbehave) at the first check."""
    owner = "EarlyStopping"
    _arguments.check_str(owner, "monitor", monitor)
    _arguments.check_number(owner, "min_delta", min_delta)
    _arguments.check_int(owner, "patience", patience, minimum=0)
    _arguments.check_flag(owner, "strict", strict)
    _arguments.check_flag(owner, "check_finite", check_finite)
    _arguments.check_number(owner, "stopping_threshold", stopping_threshold, allow_none=True)
    _arguments.check_number(owner, "divergence_threshold", divergence_threshold, allow_none=True)


class EarlyStoppingReason(Enum):
    """Why :class:`EarlyStopping` stopped (``NOT_STOPPED`` while it has not)."""

    NOT_STOPPED = 0
    STOPPING_THRESHOLD = 1
    DIVERGENCE_THRESHOLD = 2
    PATIENCE_EXHAUSTED = 3
    NON_FINITE_METRIC = 4


class EarlyStopping(Callback):
    r"""Stop fitting when ``monitor`` has not improved for ``patience`` checks.

    One check runs at the end of every training epoch, or after every validation when validation
    runs several times per epoch or not every epoch (``check_on_train_epoch_end`` overrides it).
    Why training stopped is in :attr:`stopping_reason` and :attr:`stopping_reason_message`, and is
    logged (``verbose=True``) at INFO level.

    Args:
        monitor: the logged metric to watch.
        min_delta: an improvement must exceed this (absolute) change to count.
        patience: checks without improvement before stopping.
        verbose: log each improvement and the reason for stopping.
        mode: ``"min"`` or ``"max"``: whether the metric should decrease or increase.
        strict: raise when ``monitor`` was never logged (else warn and skip the check).
        check_finite: stop when the metric becomes NaN or infinite.
        stopping_threshold: stop as soon as the metric is better than this.
        divergence_threshold: stop as soon as the metric is worse than this.
        check_on_train_epoch_end: check at the end of the training epoch (``True``) or after validation.
        log_rank_zero_only: log only on the global-zero process.

    Raises:
        MisconfigurationException: an unknown ``mode``.
        RuntimeError: ``strict=True`` and ``monitor`` is not among the logged metrics (the message lists them).

    Example::

        early_stopping = EarlyStopping("val_loss", patience=3, min_delta=0.01)
        trainer = Trainer(callbacks=[early_stopping])
        trainer.fit(model)
        early_stopping.stopping_reason   # EarlyStoppingReason.PATIENCE_EXHAUSTED
    """

    # runs after the module's on_train_epoch_end, so it sees what the module logged there
    _monitors_epoch_end_metrics = True
    mode_dict: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"min": torch.lt, "max": torch.gt}
    order_dict = {"min": "<", "max": ">"}

    def __init__(
        self,
        monitor: str,
        min_delta: float = 0.0,
        patience: int = 3,
        verbose: bool = False,
        mode: str = "min",
        strict: bool = True,
        check_finite: bool = True,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        check_on_train_epoch_end: bool | None = None,
        log_rank_zero_only: bool = False,
    ) -> None:
        super().__init__()
        if mode not in self.mode_dict:
            raise MisconfigurationException(f"`mode` can be {', '.join(self.mode_dict)}, got {mode}")
        _check_arguments(monitor, min_delta, patience, strict, check_finite, stopping_threshold, divergence_threshold)
        self.monitor = monitor
        self.patience = patience
        self.verbose = verbose
        self.mode = mode
        self.strict = strict
        self.check_finite = check_finite
        self.stopping_threshold = stopping_threshold
        self.divergence_threshold = divergence_threshold
        self.log_rank_zero_only = log_rank_zero_only
        self._check_on_train_epoch_end = check_on_train_epoch_end
        self.wait_count = 0
        self.stopped_epoch = 0
        self.stopping_reason = EarlyStoppingReason.NOT_STOPPED
        self.stopping_reason_message: str | None = None
        # stored signed: adding it to the current value asks for a strict improvement beyond min_delta
        self.min_delta = min_delta if mode == "max" else -min_delta
        self.best_score: Tensor = torch.tensor(torch.inf if mode == "min" else -torch.inf)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    @property
    def monitor_op(self) -> Callable[[Tensor, Tensor], Tensor]:
        return self.mode_dict[self.mode]

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._check_on_train_epoch_end is None:
            # validation several times per epoch, or not every epoch: check after each validation
            self._check_on_train_epoch_end = trainer.val_check_interval == 1.0 and trainer.check_val_every_n_epoch == 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "wait_count": self.wait_count,
            "stopped_epoch": self.stopped_epoch,
            "best_score": self.best_score,
            "patience": self.patience,
            "stopping_reason": self.stopping_reason.value,  # an int: a weights-only load reads it
            "stopping_reason_message": self.stopping_reason_message,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.wait_count = state_dict["wait_count"]
        self.stopped_epoch = state_dict["stopped_epoch"]
        self.best_score = state_dict["best_score"]
        self.patience = state_dict["patience"]
        reason = state_dict.get("stopping_reason", EarlyStoppingReason.NOT_STOPPED.value)
        self.stopping_reason = EarlyStoppingReason(getattr(reason, "value", reason))
        self.stopping_reason_message = state_dict.get("stopping_reason_message")

    def _should_skip_check(self, trainer: Trainer) -> bool:
        return trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._check_on_train_epoch_end or self._should_skip_check(trainer):
            return
        self._run_early_stopping_check(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._check_on_train_epoch_end or self._should_skip_check(trainer):
            return
        self._run_early_stopping_check(trainer)

    def _validate_condition_metric(self, logs: dict[str, Tensor]) -> bool:
        if logs.get(self.monitor) is not None:
            return True
        message = (
            f"Early stopping conditioned on metric `{self.monitor}` which is not available. Pass in or modify your"
            f" `EarlyStopping` callback to use any of the following: `{'`, `'.join(sorted(logs))}`"
        )
        if self.strict:
            raise RuntimeError(message)
        _warning_cache.warn(message + " (skipping the check because `strict=False`).", category=RuntimeWarning)
        return False

    def _run_early_stopping_check(self, trainer: Trainer) -> None:
        logs = trainer.callback_metrics
        if trainer.fast_dev_run or not self._validate_condition_metric(logs):
            return
        current = logs[self.monitor].squeeze()
        should_stop, reason = self._evaluate_stopping_criteria(current)
        should_stop = trainer.strategy.reduce_boolean_decision(should_stop, all=False)
        trainer.should_stop = trainer.should_stop or should_stop
        if should_stop:
            self.stopped_epoch = trainer.current_epoch
            self.stopping_reason_message = reason
        if reason and self.verbose:
            self._log_info(trainer, reason, self.log_rank_zero_only)

    def _evaluate_stopping_criteria(self, current: Tensor) -> tuple[bool, str | None]:
        """Whether to stop after seeing ``current``, and the message saying why (or what improved)."""
        op = self.order_dict[self.mode]
        if self.check_finite and not torch.isfinite(current):
            self.stopping_reason = EarlyStoppingReason.NON_FINITE_METRIC
            return True, (f"Monitored metric {self.monitor} = {current} is not finite. Previous best value was"
                          f" {self.best_score:.3f}. Signaling Trainer to stop.")
        if self.stopping_threshold is not None and self.monitor_op(current, torch.tensor(self.stopping_threshold)):
            self.stopping_reason = EarlyStoppingReason.STOPPING_THRESHOLD
            return True, (f"Stopping threshold reached: {self.monitor} = {current} {op} {self.stopping_threshold}."
                          " Signaling Trainer to stop.")
        if self.divergence_threshold is not None and self.monitor_op(
                -current, -torch.tensor(self.divergence_threshold)):
            self.stopping_reason = EarlyStoppingReason.DIVERGENCE_THRESHOLD
            return True, (f"Divergence threshold reached: {self.monitor} = {current} {op} {self.divergence_threshold}."
                          " Signaling Trainer to stop.")
        if self.monitor_op(current - self.min_delta, self.best_score.to(current.device)):
            message = self._improvement_message(current)
            self.best_score = current
            self.wait_count = 0
            return False, message
        self.wait_count += 1
        if self.wait_count >= self.patience:
            self.stopping_reason = EarlyStoppingReason.PATIENCE_EXHAUSTED
            return True, (f"Monitored metric {self.monitor} did not improve in the last {self.wait_count} records."
                          f" Best score: {self.best_score:.3f}. Signaling Trainer to stop.")
        return False, None

    def _improvement_message(self, current: Tensor) -> str:
        if torch.isfinite(self.best_score):
            return (f"Metric {self.monitor} improved by {abs(self.best_score - current):.3f} >= min_delta ="
                    f" {abs(self.min_delta)}. New best score: {current:.3f}")
        return f"Metric {self.monitor} improved. New best score: {current:.3f}"

    @staticmethod
    def _log_info(trainer: Trainer | None, message: str, log_rank_zero_only: bool = False) -> None:
        """Log ``message`` at INFO, prefixed with ``[rank: N]`` when several processes run; with
        ``log_rank_zero_only`` only global rank 0 logs it."""
        rank = trainer.global_rank if trainer is not None and trainer.world_size > 1 else None
        if rank is not None:
            message = f"[rank: {rank}] {message}"
        if rank is None or not log_rank_zero_only or rank == 0:
            log.info(message)
