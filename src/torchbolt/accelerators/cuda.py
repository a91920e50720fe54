"""The CUDA accelerator."""

from __future__ import annotations

import os
from typing import Any

import torch

from torchbolt.accelerators.accelerator import Accelerator
from torchbolt.utilities.exceptions import MisconfigurationException


def _parse_gpu_ids(devices: Any, available: int) -> list[int] | None:
    """``devices`` as a list of CUDA indices: int n -> first n, -1/"-1" -> all, "0,1" / [0, 1] -> those.

    Returns ``None`` when nothing is selected (``None``, a count of 0, an empty list, or ``"auto"``
    with no visible device).

    Raises:
        MisconfigurationException: for an unsupported type or value, or an index that is not visible.
    """
    if devices is None:
        return None
    if isinstance(devices, str):
        if devices.strip() == "auto":
            return list(range(available)) if available else None
        devices = _gpu_devices_from_string(devices)
    ids = _requested_gpu_ids(devices, available)
    if not ids:
        return None
    _check_gpu_ids_visible(ids, available)
    return ids


def _gpu_devices_from_string(devices: str) -> int | list[int]:
    """A ``devices`` string other than ``"auto"`` as the int or index list it spells ("-1", "2", "0,1")."""
    text = devices.strip()
    if text == "-1":
        return -1
    if "," in text:
        return [int(x) for x in text.split(",") if x.strip()]
    try:
        return int(text)
    except ValueError:
        raise MisconfigurationException(
            f"`Trainer(devices={devices!r})`: pass an int, a list of indices, '0,1' or 'auto'."
        ) from None


def _requested_gpu_ids(devices: Any, available: int) -> list[int]:
    """The indices an int count (``-1`` for all ``available``) or a list/tuple of indices asks for.

    Raises:
        MisconfigurationException: for a bool, a count below -1, or any other type.
    """
    if isinstance(devices, bool):
        raise MisconfigurationException(f"`Trainer(devices={devices!r})`: a bool is not a device count.")
    if isinstance(devices, int):
        if devices == -1:
            return list(range(available))
        if devices < -1:
            raise MisconfigurationException(f"`Trainer(devices={devices})`: the count must be -1 or >= 0.")
        return list(range(devices))
    if isinstance(devices, (list, tuple)):
        return [int(i) for i in devices]
    raise MisconfigurationException(
        f"`Trainer(devices={devices!r})` has unsupported type {type(devices).__name__}."
    )


def _check_gpu_ids_visible(ids: list[int], available: int) -> None:
    """Raise ``MisconfigurationException`` when any of ``ids`` is not one of the ``available`` visible devices."""
    missing = [i for i in ids if i >= available or i < 0]
    if missing:
        raise MisconfigurationException(
            f"You requested GPU(s) {ids} but only {available} CUDA device(s) are visible"
            f" (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}). Use fewer devices,"
            " or `accelerator='cpu'`."
        )


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


_NVIDIA_SMI_FIELDS = {
    "utilization.gpu": "%",
    "memory.used": "MB",
    "memory.free": "MB",
    "utilization.memory": "%",
    "fan.speed": "%",
    "temperature.gpu": "°C",
    "temperature.memory": "°C",
}


def get_nvidia_gpu_stats(device: torch.device | str | int) -> dict[str, float]:
    """Utilization, memory, fan and temperature of one NVIDIA GPU as ``nvidia-smi`` reports them.

    Keys are ``"<field> (<unit>)"``, e.g. ``"memory.used (MB)"``; a field the card does not report is
    left out. Raises ``FileNotFoundError`` when ``nvidia-smi`` is not on ``PATH``.
    """
    import shutil
    import subprocess

    executable = shutil.which("nvidia-smi")
    if executable is None:
        raise FileNotFoundError("`get_nvidia_gpu_stats` needs the `nvidia-smi` program on PATH")
    index = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    gpu = index.index if index.index is not None else 0
    fields = list(_NVIDIA_SMI_FIELDS)
    result = subprocess.run(
        [executable, f"--query-gpu={','.join(fields)}", "--format=csv,nounits,noheader", f"--id={gpu}"],
        capture_output=True, text=True, check=True, timeout=30,
    )
    stats: dict[str, float] = {}
    for field, raw in zip(fields, result.stdout.strip().split(", ")):
        try:
            stats[f"{field} ({_NVIDIA_SMI_FIELDS[field]})"] = float(raw)
        except ValueError:  # "[N/A]" on cards without the sensor
            continue
    return stats
