"""``DeviceStatsMonitor``: device memory/utilization statistics sent to the loggers during training."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torchbolt.callbacks.callback import Callback, _logger_step
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.imports import module_available

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer


def _should_update_logs(trainer: Trainer) -> bool:
    """The Trainer's own rule for a step-metric flush: every ``log_every_n_steps`` optimizer steps, or when stopping."""
    every = trainer.log_every_n_steps
    return bool(every and (_logger_step(trainer) + 1) % every == 0) or trainer.should_stop


class DeviceStatsMonitor(Callback):
    """Log the accelerator's statistics at the start and end of training, validation and test batches, when step
    metrics are logged.

    On CUDA: ``torch.cuda.memory_stats`` (allocated/reserved/active bytes, allocation counts...). On the
    CPU, or with ``cpu_stats=True``: ``cpu_percent``, ``cpu_vm_percent`` and ``cpu_swap_percent``
    (needs ``psutil``). Keys look like ``DeviceStatsMonitor.on_train_batch_end/cpu_percent``; they are
    read only on logging steps (every ``log_every_n_steps``), so the monitor costs nothing in between.

    Args:
        cpu_stats: ``True``: also log CPU stats on a GPU run; ``False``: never log CPU stats;
            ``None``: CPU stats only when training on the CPU.

    Raises:
        MisconfigurationException: at fit start without a logger.
        ModuleNotFoundError: at fit start when CPU stats are wanted and ``psutil`` is missing.

    Example::

        trainer = Trainer(callbacks=[DeviceStatsMonitor()], logger=CSVLogger("logs"))
    """

    def __init__(self, cpu_stats: bool | None = None) -> None:
        self._cpu_stats = cpu_stats

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not trainer.loggers:
            raise MisconfigurationException("Cannot use `DeviceStatsMonitor` callback with `Trainer(logger=False)`.")
        device = trainer.strategy.root_device
        wants_cpu = self._cpu_stats or (self._cpu_stats is None and device.type == "cpu")
        if wants_cpu and not module_available("psutil"):
            raise ModuleNotFoundError(
                "`DeviceStatsMonitor` cannot log CPU stats because `psutil` is not installed. Install it with"
                " `pip install psutil`, or pass `DeviceStatsMonitor(cpu_stats=False)`."
            )

    def _log_device_stats(self, trainer: Trainer, key: str) -> None:
        if not _should_update_logs(trainer):
            return
        device = trainer.strategy.root_device
        if self._cpu_stats is False and device.type == "cpu":
            return
        stats: dict[str, Any] = dict(trainer.accelerator.get_device_stats(device))
        if self._cpu_stats and device.type != "cpu":
            from torchbolt.accelerators.cpu import CPUAccelerator

            stats.update(CPUAccelerator().get_device_stats("cpu"))
        if not stats:
            return
        step = _logger_step(trainer)
        prefix = f"{type(self).__qualname__}.{key}"
        for logger in trainer.loggers:
            sep = logger.group_separator
            logger.log_metrics({f"{prefix}{sep}{k}": v for k, v in stats.items()}, step=step)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._log_device_stats(trainer, "on_train_batch_start")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._log_device_stats(trainer, "on_train_batch_end")

    # evaluation batches follow the same logging-step rule (the training step counter), as in Lightning

    def on_validation_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        self._log_device_stats(trainer, "on_validation_batch_start")

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self._log_device_stats(trainer, "on_validation_batch_end")

    def on_test_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int,
                            dataloader_idx: int = 0) -> None:
        self._log_device_stats(trainer, "on_test_batch_start")

    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._log_device_stats(trainer, "on_test_batch_end")
