"""Apple Metal (MPS) accelerator."""

from __future__ import annotations

import platform
from typing import Any

import torch

from torchbolt.accelerators.accelerator import Accelerator
from torchbolt.utilities.exceptions import MisconfigurationException


class MPSAccelerator(Accelerator):
    """Apple silicon GPUs through Metal Performance Shaders (one device)."""

    def setup_device(self, device: torch.device) -> None:
        if device.type != "mps":
            raise MisconfigurationException(f"Device should be MPS, got {device} instead.")

    @staticmethod
    def parse_devices(devices: Any) -> list[int] | None:
        if devices in ("auto", 1, "1", [0], -1, "-1"):
            return [0] if MPSAccelerator.is_available() else None
        raise MisconfigurationException(f"`Trainer(accelerator='mps', devices={devices!r})`: MPS has one device.")

    @staticmethod
    def get_parallel_devices(devices: Any) -> list[torch.device]:
        return [torch.device("mps", 0)] if MPSAccelerator.parse_devices(devices) else []

    @staticmethod
    def auto_device_count() -> int:
        return 1

    @staticmethod
    def is_available() -> bool:
        mps = getattr(torch.backends, "mps", None)
        return bool(mps is not None and mps.is_available() and platform.processor() in ("arm", "arm64"))


def get_device_stats() -> dict[str, float]:
    """Host CPU and memory use in percent, the figures an Apple-silicon machine's unified memory is read
    from; the same keys as ``torchbolt.accelerators.cpu.get_cpu_stats``."""
    from torchbolt.accelerators.cpu import get_cpu_stats

    return get_cpu_stats()
