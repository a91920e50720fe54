"""The learning-rate range test: train a few steps while the learning rate grows, record the loss.

The suggestion is the learning rate where the smoothed loss falls fastest (the steepest negative
gradient of the loss curve), a good starting point for training.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from torchbolt.callbacks.callback import Callback
from torchbolt.core.optimizer import LRSchedulerConfig
from torchbolt.tuner._search import SearchRun
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.imports import _require
from torchbolt.utilities.parsing import lightning_hasattr, lightning_setattr
from torchbolt.utilities.rank_zero import rank_zero_info, rank_zero_warn

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer

log = logging.getLogger(__name__)

_LR_ATTR_NAMES = ("lr", "learning_rate")


def _determine_lr_attr_name(model: LightningModule, attr_name: str = "") -> str:
    """The attribute holding the learning rate: ``attr_name``, else ``lr``, else ``learning_rate``.

    Raises:
        AttributeError: when the attribute is on neither the model, its ``hparams``, nor the datamodule.
    """
    if attr_name:
        if not lightning_hasattr(model, attr_name):
            raise AttributeError(
                f"The attribute name for the learning rate was set to {attr_name!r}, but it is on neither"
                " `model`, `model.hparams` nor the datamodule."
            )
        return attr_name
    for name in _LR_ATTR_NAMES:
        if lightning_hasattr(model, name):
            return name
    raise AttributeError(
        f"When using the learning rate finder, either `model` or `model.hparams` should have one of these fields:"
        f" {_LR_ATTR_NAMES}. If your model has a different name for the learning rate, set it with"
        " `.lr_find(attr_name=...)`, or pass `update_attr=False`."
    )


class _LRFinder:
    """The result of a learning-rate range test.

    Attributes:
        results: ``{"lr": [...], "loss": [...]}``: the learning rate of each step and the smoothed loss.
        mode: ``"exponential"`` or ``"linear"`` spacing of the tested learning rates.

    Example::

        lr_finder = Tuner(trainer).lr_find(model)
        lr_finder.suggestion()                          # e.g. 0.0083
        fig = lr_finder.plot(suggest=True)
        fig.savefig("lr_find.png")
    """

    def __init__(self, mode: str, lr_min: float, lr_max: float, num_training: int) -> None:
        if mode not in ("linear", "exponential"):
            raise ValueError(f"`mode` should be either 'linear' or 'exponential', got {mode!r}")
        self.mode = mode
        self.lr_min = lr_min
        self.lr_max = lr_max
        self.num_training = num_training
        self.results: dict[str, Any] = {}
        self._optimal_idx: int | None = None
        #: index of the last training batch of the search (counted from 0 in the search; for debugging)
        self._total_batch_idx = -1

    def suggestion(self, skip_begin: int = 10, skip_end: int = 1) -> float | None:
        """The learning rate where the smoothed loss falls fastest.

        Args:
            skip_begin: points to ignore at the start (the curve is noisy before the average settles).
            skip_end: points to ignore at the end (where the loss explodes).

        Returns:
            The suggested learning rate, or ``None`` when fewer than two finite points remain.
        """
        lrs = self.results.get("lr", [])
        losses = self.results.get("loss", [])
        end = len(losses) - skip_end
        indices = [i for i in range(skip_begin, end) if math.isfinite(losses[i])]
        if len(indices) < 2:
            log.error(
                "Failed to compute suggestion for learning rate because there are not enough points. Increase the"
                " loop iteration limits or the size of your dataset/dataloader."
            )
            self._optimal_idx = None
            return None
        # the points are evenly spaced in log(lr) (exponential) or lr (linear), so the step index is
        # the natural abscissa; using the indices as coordinates also keeps gaps left by non-finite
        # losses from shifting the result
        coords = torch.tensor(indices, dtype=torch.float64)
        values = torch.tensor([losses[i] for i in indices], dtype=torch.float64)
        gradients = torch.gradient(values, spacing=(coords,))[0]
        self._optimal_idx = indices[int(torch.argmin(gradients))]
        return lrs[self._optimal_idx]

    def plot(self, suggest: bool = False, show: bool = False, ax: Axes | None = None) -> Figure:
        """Plot the loss against the learning rate (log scale in exponential mode).

        Args:
            suggest: mark the suggested learning rate with a red dot.
            show: call ``matplotlib.pyplot.show()``.
            ax: draw on these axes instead of a new figure.

        Returns:
            The matplotlib figure (save it with ``fig.savefig("lr.png")``).

        Raises:
            ModuleNotFoundError: when matplotlib is not installed.
        """
        _require("matplotlib", "all", "`lr_finder.plot()`")
        import matplotlib.pyplot as plt

        lrs, losses = self.results["lr"], self.results["loss"]
        if ax is None:
            fig, ax = plt.subplots()
        else:
            fig = ax.figure  # type: ignore[assignment]
        ax.plot(lrs, losses)
        if self.mode == "exponential":
            ax.set_xscale("log")
        ax.set_xlabel("Learning rate")
        ax.set_ylabel("Loss")
        if suggest:
            self.suggestion()
            if self._optimal_idx is not None:
                ax.plot(lrs[self._optimal_idx], losses[self._optimal_idx], markersize=10, marker="o", color="red")
        if show:
            plt.show()
        return fig


class _LRCallback(Callback):
    """Records the learning rate before each optimizer step and the smoothed loss after it.

    The loss is an exponential moving average with bias correction (``beta``); the search stops when
    it exceeds ``early_stop_threshold`` times the best value seen (the loss is diverging).
    """

    def __init__(self, num_training: int, early_stop_threshold: float | None = 4.0, beta: float = 0.98) -> None:
        self.num_training = num_training
        self.early_stop_threshold = early_stop_threshold
        self.beta = beta
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.avg_loss = 0.0
        self.best_loss = 0.0
        self._count = 0

    @staticmethod
    def _is_step_batch(trainer: Trainer, batch_idx: int) -> bool:
        return (batch_idx + 1) % trainer.accumulate_grad_batches == 0 or batch_idx + 1 >= trainer.num_training_batches

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self._is_step_batch(trainer, batch_idx):
            self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._is_step_batch(trainer, batch_idx):
            return
        if not outputs:
            # `training_step` returned None: keep `lrs` and `losses` aligned; NaN is ignored by `suggestion`
            self.losses.append(float("nan"))
            return
        # the step's loss, undoing the division by the accumulation factor
        current_loss = float(outputs["loss"]) * trainer.accumulate_grad_batches
        self._count += 1
        self.avg_loss = self.beta * self.avg_loss + (1 - self.beta) * current_loss
        # bias correction: the average started at 0 and has seen `_count` values
        smoothed_loss = self.avg_loss / (1 - self.beta**self._count)
        if (self.early_stop_threshold is not None and self._count > 1
                and smoothed_loss > self.early_stop_threshold * self.best_loss):
            trainer.should_stop = True
        trainer.should_stop = trainer.strategy.broadcast(trainer.should_stop)
        if smoothed_loss < self.best_loss or self._count == 1:
            self.best_loss = smoothed_loss
        self.losses.append(smoothed_loss)


class _ExponentialLR(LRScheduler):
    """``num_iter`` learning rates spaced evenly in log scale from ``lr_min`` (the groups' lr) to ``end_lr``."""

    def __init__(self, optimizer: Optimizer, end_lr: float, num_iter: int, last_epoch: int = -1) -> None:
        self.end_lr = end_lr
        self.num_iter = num_iter
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        fraction = min(self.last_epoch / max(self.num_iter - 1, 1), 1.0)
        return [float(base_lr) * (self.end_lr / float(base_lr)) ** fraction for base_lr in self.base_lrs]


class _LinearLR(LRScheduler):
    """``num_iter`` learning rates spaced evenly from ``lr_min`` (the groups' lr) to ``end_lr``."""

    def __init__(self, optimizer: Optimizer, end_lr: float, num_iter: int, last_epoch: int = -1) -> None:
        self.end_lr = end_lr
        self.num_iter = num_iter
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        fraction = min(self.last_epoch / max(self.num_iter - 1, 1), 1.0)
        return [float(base_lr) + fraction * (self.end_lr - float(base_lr)) for base_lr in self.base_lrs]


def _check_lr_find_args(min_lr: float, max_lr: float, num_training: int, mode: str) -> None:
    if mode not in ("linear", "exponential"):
        raise MisconfigurationException(f"`lr_find(mode={mode!r})` is invalid: use 'exponential' or 'linear'.")
    for name, value in (("min_lr", min_lr), ("max_lr", max_lr)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise MisconfigurationException(
                f"`lr_find({name}={value!r})` is invalid: expected a positive, finite learning rate."
            )
    if isinstance(num_training, bool) or not isinstance(num_training, int) or num_training < 1:
        raise MisconfigurationException(
            f"`lr_find(num_training={num_training!r})` is invalid: expected an int >= 1 (the number of steps)."
        )
    if min_lr > max_lr:
        # allowed (the rate then decreases step by step), but usually the two were swapped by mistake
        rank_zero_warn(
            f"`lr_find(min_lr={min_lr}, max_lr={max_lr})`: min_lr is larger than max_lr, so the learning rate"
            " decreases during the search. Swap them to test increasing learning rates."
        )


def _lr_find(
    trainer: Trainer,
    model: LightningModule,
    min_lr: float = 1e-8,
    max_lr: float = 1.0,
    num_training: int = 100,
    mode: Literal["exponential", "linear"] | str = "exponential",
    early_stop_threshold: float | None = 4.0,
    update_attr: bool = False,
    attr_name: str = "",
) -> _LRFinder | None:
    """Run the range test inside the running ``fit`` and restore everything afterwards.

    Returns:
        The result, or ``None`` under ``fast_dev_run``.

    Raises:
        MisconfigurationException: for several optimizers or invalid arguments.
        AttributeError: when ``update_attr`` and no learning-rate attribute is found.
    """
    _check_lr_find_args(min_lr, max_lr, num_training, mode)
    if trainer.state.fn is not None and trainer.state.fn.value != "fit":
        raise MisconfigurationException(
            f"The learning rate finder runs inside `trainer.fit` (it trains), not inside"
            f" `trainer.{trainer.state.fn.value}`."
        )
    if trainer.fast_dev_run:
        rank_zero_warn("Skipping learning rate finder since `fast_dev_run` is enabled.")
        return None
    if update_attr:
        attr_name = _determine_lr_attr_name(model, attr_name)
    optimizers = trainer.optimizers
    if len(optimizers) != 1:
        raise MisconfigurationException(
            f"`model.configure_optimizers()` returned {len(optimizers)} optimizers, but the learning rate finder"
            " works with exactly one (it only works with single optimizer)."
        )
    finder = _LRFinder(mode, min_lr, max_lr, num_training)
    recorder = _LRCallback(num_training, early_stop_threshold)
    # the search goes on from the fit's current step (hooks see `global_step` continue; a search in the
    # middle of a fit trains `num_training` more steps), and the counters are put back afterwards
    start = trainer.global_step
    # validation and the sanity check cost time and do not change the loss curve
    with SearchRun(trainer, [recorder], continue_progress=True, max_steps=start + num_training, max_epochs=-1,
                   min_epochs=None, min_steps=None, limit_val_batches=0, num_sanity_val_steps=0,
                   val_check_interval=1.0) as search:
        optimizer = optimizers[0]
        for group in optimizer.param_groups:
            group["lr"] = min_lr
            group["initial_lr"] = min_lr
        scheduler_cls = _LinearLR if mode == "linear" else _ExponentialLR
        scheduler = scheduler_cls(optimizer, max_lr, num_training)
        trainer.strategy.lr_scheduler_configs = [LRSchedulerConfig(scheduler, interval="step")]
        search.run()
        steps = trainer.global_step - start
        finder._total_batch_idx = trainer.fit_loop.total_batch_idx if trainer.fit_loop is not None else -1
    if steps < num_training:
        rank_zero_info(f"LR finder stopped early after {steps} steps due to diverging loss.")
    finder.results = trainer.strategy.broadcast({"lr": recorder.lrs, "loss": recorder.losses})
    if update_attr:
        lr = finder.suggestion()
        if lr is not None:
            lightning_setattr(model, attr_name, lr)
            rank_zero_info(f"Learning rate set to {lr}")
    return finder


def _apply_lr(trainer: Trainer, lr: float) -> None:
    """Make a fit that continues after the search train at ``lr`` (its optimizer already exists)."""
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            group["lr"] = lr
            if "initial_lr" in group:
                group["initial_lr"] = lr
    for config in trainer.lr_scheduler_configs:
        scheduler = config.scheduler
        if hasattr(scheduler, "base_lrs"):
            scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
        if hasattr(scheduler, "_last_lr"):
            scheduler._last_lr = [lr] * len(scheduler._last_lr)
