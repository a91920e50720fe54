"""``LearningRateMonitor``: log the learning rate (and optionally momentum, weight decay) of every optimizer."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch.optim import Optimizer

from torchbolt.callbacks.callback import Callback, _logger_step
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import rank_zero_warn

if TYPE_CHECKING:
    from torchbolt.core.optimizer import LRSchedulerConfig
    from torchbolt.trainer.trainer import Trainer


class LearningRateMonitor(Callback):
    r"""Log learning rates to the loggers and to ``trainer.callback_metrics``.

    Names are ``lr-<OptimizerClass>`` (``lr-Adam``, a second Adam ``lr-Adam-1``), or the scheduler
    config's ``"name"``; optimizers with several parameter groups get ``/pg1``, ``/pg2`` (or the
    group's ``"name"``). Momentum is logged as ``<name>-momentum`` (``betas[0]`` for Adam-like
    optimizers) and weight decay as ``<name>-weight_decay``.

    Args:
        logging_interval: ``"step"`` or ``"epoch"`` for every optimizer; ``None`` follows each
            scheduler's own ``interval`` (optimizers without a scheduler are logged every step).
        log_momentum: also log the momentum.
        log_weight_decay: also log the weight decay.

    Raises:
        MisconfigurationException: a bad ``logging_interval``, or a Trainer without a logger.

    Example::

        trainer = Trainer(callbacks=[LearningRateMonitor(logging_interval="step")])
    """

    def __init__(
        self,
        logging_interval: Literal["step", "epoch"] | None = None,
        log_momentum: bool = False,
        log_weight_decay: bool = False,
    ) -> None:
        if logging_interval not in (None, "step", "epoch"):
            raise MisconfigurationException("logging_interval should be `step` or `epoch` or `None`.")
        self.logging_interval = logging_interval
        self.log_momentum = log_momentum
        self.log_weight_decay = log_weight_decay
        self.lrs: dict[str, list[float]] = {}
        self.last_momentum_values: dict[str, float | None] = {}
        self.last_weight_decay_values: dict[str, float | None] = {}

    def on_train_start(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        if not trainer.loggers:
            raise MisconfigurationException("Cannot use `LearningRateMonitor` callback with `Trainer` that has no logger.")
        if self.log_momentum:
            optimizers = ([c.scheduler.optimizer for c in trainer.lr_scheduler_configs]
                          or [_unwrap(o) for o in trainer.optimizers])
            if any("momentum" not in o.defaults and "betas" not in o.defaults for o in optimizers):
                rank_zero_warn(
                    "You have set log_momentum=True, but some optimizers do not have momentum. This will log a value 0"
                    " for the momentum.",
                    category=RuntimeWarning,
                )
        names = [name for group in self._names(trainer)[0] for name in group]
        self.lrs = {name: [] for name in names}
        self.last_momentum_values = {f"{name}-momentum": None for name in names}
        self.last_weight_decay_values = {f"{name}-weight_decay": None for name in names}

    def on_train_batch_start(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        if self.logging_interval == "epoch" or not _should_update_logs(trainer):
            return
        self._log(trainer, "step" if self.logging_interval is None else "any")

    def on_train_epoch_start(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        if self.logging_interval == "step":
            return
        self._log(trainer, "epoch" if self.logging_interval is None else "any")

    def _log(self, trainer: Trainer, interval: str) -> None:
        stats = self._extract_stats(trainer, interval)
        if stats:
            device = trainer.strategy.root_device
            trainer.callback_metrics.update({k: torch.tensor(v, device=device) for k, v in stats.items()})
            for logger in trainer.loggers:
                logger.log_metrics(stats, step=_logger_step(trainer))

    def _extract_stats(self, trainer: Trainer, interval: str) -> dict[str, float]:
        """The values of every optimizer due at ``interval`` (``"any"``: all of them)."""
        names, _, without = self._names(trainer)
        self._rename_grown_optimizers(names)
        stats: dict[str, float] = {}
        configs = trainer.lr_scheduler_configs
        for group_names, config in zip(names, configs):
            if interval in (config.interval, "any"):
                stats.update(self._optimizer_stats(config.scheduler.optimizer, group_names))
        for group_names, optimizer in zip(names[len(configs):], without):
            stats.update(self._optimizer_stats(optimizer, group_names))
        return stats

    def _rename_grown_optimizers(self, names: list[list[str]]) -> None:
        """An optimizer that gained parameter groups (e.g. a finetuning callback unfroze a backbone) is
        now logged as ``name/pg1``, ``name/pg2``...: its history moves from ``name`` to ``name/pg1``, and
        the renamed and new keys go last in ``self.lrs`` (Lightning's order)."""
        for group_names in names:
            for name in group_names:
                if name.endswith("/pg1"):
                    old = name[: -len("/pg1")]
                    if old in self.lrs and name not in self.lrs:
                        self.lrs[name] = self.lrs.pop(old)
                if name not in self.lrs:
                    self.lrs[name] = []

    def _optimizer_stats(self, optimizer: Optimizer, names: list[str]) -> dict[str, float]:
        stats: dict[str, float] = {}
        use_betas = "betas" in optimizer.defaults
        for group, name in zip(optimizer.param_groups, names):
            lr = float(group["lr"])
            self.lrs.setdefault(name, []).append(lr)
            stats[name] = lr
            if self.log_momentum:
                momentum = group["betas"][0] if use_betas else group.get("momentum", 0)
                self.last_momentum_values[f"{name}-momentum"] = momentum
                stats[f"{name}-momentum"] = float(momentum)
            if self.log_weight_decay:
                decay = group.get("weight_decay", 0)
                self.last_weight_decay_values[f"{name}-weight_decay"] = decay
                stats[f"{name}-weight_decay"] = float(decay)
        return stats

    def _names(self, trainer: Trainer) -> tuple[list[list[str]], list[Optimizer], list[Optimizer]]:
        """Per optimizer (scheduled ones first), the name of each parameter group."""
        seen: list[Optimizer] = []
        counts: defaultdict[type, int] = defaultdict(int)
        names: list[list[str]] = []
        configs: list[LRSchedulerConfig] = trainer.lr_scheduler_configs
        for config in configs:
            optimizer = config.scheduler.optimizer
            name = config.name if config.name is not None else f"lr-{type(optimizer).__name__}"
            names.append(self._group_names(optimizer, name, seen, counts, named=config.name is not None))
        without: list[Optimizer] = []
        for optimizer in (_unwrap(o) for o in trainer.optimizers):
            if any(optimizer is s for s in seen):
                continue
            names.append(self._group_names(optimizer, f"lr-{type(optimizer).__name__}", seen, counts, named=False))
            without.append(optimizer)
        return names, seen, without

    @staticmethod
    def _group_names(optimizer: Optimizer, name: str, seen: list[Optimizer], counts: defaultdict[type, int],
                     named: bool) -> list[str]:
        seen.append(optimizer)
        if not named:
            counts[type(optimizer)] += 1
            count = counts[type(optimizer)]
            if count > 1:
                name = f"{name}-{count - 1}"
        groups = optimizer.param_groups
        labels = [g.get("name", f"pg{i}") for i, g in enumerate(groups, start=1)]
        duplicated = {label for label in labels if labels.count(label) > 1}
        if duplicated:
            raise MisconfigurationException(
                "A single `Optimizer` cannot have multiple parameter groups with identical `name` values."
                f" {name} has duplicated parameter group names {duplicated}"
            )
        if len(groups) > 1:
            return [f"{name}/{label}" for label in labels]
        group_name = groups[0].get("name") if groups else None
        return [f"{name}/{group_name}" if group_name else name]


def _unwrap(optimizer: Any) -> Optimizer:
    return optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer


def _should_update_logs(trainer: Trainer) -> bool:
    # + 1: checked before the step is taken, as the step metrics flushed after it
    every = trainer.log_every_n_steps
    due = bool(every) and (_logger_step(trainer) + 1) % every == 0
    return due or trainer.should_stop
