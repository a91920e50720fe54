"""The CPU accelerator."""

from __future__ import annotations

from typing import Any

import torch

from torchbolt.accelerators.accelerator import Accelerator
from torchbolt.utilities.exceptions import MisconfigurationException


class CPUAccelerator(Accelerator):
    """Runs on the host CPU; ``devices`` is the number of processes (each on the CPU)."""

    def setup_device(self, device: torch.device) -> None:
        if device.type != "cpu":
            raise MisconfigurationException(f"Device should be CPU, got {device} instead.")

    @staticmethod
    def parse_devices(devices: Any) -> int:
        if isinstance(devices, str) and devices.strip() == "auto":
            return 1
        if isinstance(devices, (list, tuple)):
            raise MisconfigurationException(
                f"`Trainer(accelerator='cpu', devices={devices!r})`: CPU devices are a count of processes,"
                " not a list of indices. Pass an int, e.g. `devices=2`."
            )
        try:
            count = int(devices)
        except (TypeError, ValueError):
            raise MisconfigurationException(
                f"`Trainer(devices={devices!r})` is invalid for the CPU: pass a positive int or 'auto'."
            ) from None
        if count <= 0:
            raise MisconfigurationException(
                f"`Trainer(accelerator='cpu', devices={devices!r})`: the number of CPU processes must be >= 1."
            )
        return count

    @staticmethod
    def get_parallel_devices(devices: Any) -> list[torch.device]:
        count = CPUAccelerator.parse_devices(devices)
        return [torch.device("cpu")] * count

    @staticmethod
    def auto_device_count() -> int:
        return 1

    @staticmethod
    def is_available() -> bool:
        return True

    def get_device_stats(self, device: torch.device | str | int) -> dict[str, Any]:
        return get_cpu_stats()


def get_cpu_stats() -> dict[str, float]:
    """This machine's CPU load, memory and swap use in percent (``cpu_percent``, ``cpu_vm_percent``,
    ``cpu_swap_percent``); an empty dict when ``psutil`` is not installed."""
    try:
        import psutil
    except ImportError:
        return {}
    return {
        "cpu_percent": float(psutil.cpu_percent()),
        "cpu_vm_percent": float(psutil.virtual_memory().percent),
        "cpu_swap_percent": float(psutil.swap_memory().percent),
    }
