"""The ``Accelerator`` interface: facts about one kind of device, nothing about training."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch


class Accelerator(ABC):
    """A kind of device (CPU, CUDA GPU, Apple MPS, TPU).

    Strategies ask it to prepare a device and to parse ``Trainer(devices=...)``; it holds no
    training state and no reference to the Trainer.
    """

    def setup_device(self, device: torch.device) -> None:
        """Make ``device`` current for this process (e.g. ``torch.cuda.set_device``)."""

    def setup(self, trainer: Any) -> None:
        """Apply Trainer-level device settings (e.g. ``cudnn.benchmark``) once before a run."""

    def teardown(self) -> None:
        """Release what :meth:`setup_device` acquired."""

    @staticmethod
    @abstractmethod
    def parse_devices(devices: Any) -> Any:
        """Normalize a ``devices`` argument for this accelerator (count or list of indices)."""

    @staticmethod
    @abstractmethod
    def get_parallel_devices(devices: Any) -> list[torch.device]:
        """The ``torch.device`` objects a run on ``devices`` uses."""

    @staticmethod
    @abstractmethod
    def auto_device_count() -> int:
        """How many devices ``devices="auto"`` means."""

    @staticmethod
    @abstractmethod
    def is_available() -> bool:
        """Whether this accelerator can be used in this process."""

    def get_device_stats(self, device: torch.device | str | int) -> dict[str, Any]:
        """Memory/utilization statistics of ``device`` for ``DeviceStatsMonitor``."""
        return {}

    @classmethod
    def register_accelerators(cls, accelerator_registry: Any) -> None:
        """Kept for Lightning compatibility: torchbolt resolves accelerators by name."""
