"""The CUDA accelerator."""

from __future__ import annotations

import os
from typing import Any

import torch

from torchbolt.accelerators.accelerator import Accelerator
from torchbolt.utilities.exceptions import MisconfigurationException


def _parse_gpu_ids(devices: Any, available: int) -> list[int] | None:
    """``devices`` as a list of CUDA indices: int n -> first n, -1/"-1" -> all, "0,1" / [0, 1] -> those."""
    if devices is None:
        return None
    if isinstance(devices, str):
        text = devices.strip()
        if text == "auto":
            return list(range(available)) if available else None
        if text == "-1":
            devices = -1
        elif "," in text:
            devices = [int(x) for x in text.split(",") if x.strip()]
        else:
            try:
                devices = int(text)
            except ValueError:
                raise MisconfigurationException(
                    f"`Trainer(devices={devices!r})`: pass an int, a list of indices, '0,1' or 'auto'."
                ) from None
    if isinstance(devices, bool):
        raise MisconfigurationException(f"`Trainer(devices={devices!r})`: a bool is not a device count.")
    if isinstance(devices, int):
        if devices == -1:
            ids = list(range(available))
        elif devices < -1:
            raise MisconfigurationException(f"`Trainer(devices={devices})`: the count must be -1 or >= 0.")
        else:
            ids = list(range(devices))
    elif isinstance(devices, (list, tuple)):
        ids = [int(i) for i in devices]
    else:
        raise MisconfigurationException(
            f"`Trainer(devices={devices!r})` has unsupported type {type(devices).__name__}."
        )
    if not ids:
        return None
    missing = [i for i in ids if i >= available or i < 0]
    if missing:
        raise MisconfigurationException(
            f"You requested GPU(s) {ids} but only {available} CUDA device(s) are visible"
            f" (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}). Use fewer devices,"
            " or `accelerator='cpu'`."
        )
    return ids


def num_cuda_devices() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def find_usable_cuda_devices(num_devices: int = -1) -> list[int]:
    """Indices of CUDA devices that can allocate memory (skips busy devices in exclusive mode).

    Args:
        num_devices: how many to return; ``-1`` for all usable ones.

    Raises:
        ValueError: when fewer usable devices exist than requested.
    """
    if num_devices == 0:
        return []
    visible = num_cuda_devices()
    if num_devices > visible:
        raise ValueError(f"You requested {num_devices} CUDA devices, but only {visible} are visible.")
    usable: list[int] = []
    for index in range(visible):
        try:
            torch.tensor(0, device=torch.device("cuda", index))
        except RuntimeError:
            continue
        usable.append(index)
        if num_devices != -1 and len(usable) == num_devices:
            break
    if num_devices != -1 and len(usable) < num_devices:
        raise ValueError(f"You requested {num_devices} CUDA devices but only {len(usable)} could be used.")
    return usable


class CUDAAccelerator(Accelerator):
    """NVIDIA GPUs through CUDA."""

    def setup_device(self, device: torch.device) -> None:
        if device.type != "cuda":
            raise MisconfigurationException(f"Device should be GPU, got {device} instead")
        torch.cuda.set_device(device)

    def teardown(self) -> None:
        torch.cuda.empty_cache()

    @staticmethod
    def parse_devices(devices: Any) -> list[int] | None:
        return _parse_gpu_ids(devices, num_cuda_devices())

    @staticmethod
    def get_parallel_devices(devices: Any) -> list[torch.device]:
        ids = CUDAAccelerator.parse_devices(devices) or []
        return [torch.device("cuda", i) for i in ids]

    @staticmethod
    def auto_device_count() -> int:
        return num_cuda_devices()

    @staticmethod
    def is_available() -> bool:
        return num_cuda_devices() > 0

    def get_device_stats(self, device: torch.device | str | int) -> dict[str, Any]:
        return dict(torch.cuda.memory_stats(device))
