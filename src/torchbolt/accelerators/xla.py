"""TPUs through ``torch_xla`` (experimental).

torchbolt cannot be run on a TPU where it is developed: this path follows torch_xla's documented
API and is tested against a stand-in module. One device per process (``devices=1`` or ``[i]``);
multi-core TPU training needs an XLA launcher that torchbolt does not provide.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from torchbolt.accelerators.accelerator import Accelerator
from torchbolt.utilities.exceptions import MisconfigurationException


def _xla_installed() -> bool:
    try:
        importlib.import_module("torch_xla")
    except ImportError:
        return False
    return True


def _require_xla() -> None:
    if not _xla_installed():
        raise ModuleNotFoundError(
            "TPU support needs `torch_xla`, which is not installed. Install the build matching your torch"
            " version (see https://github.com/pytorch/xla), or use `accelerator='cpu'` / `'gpu'`."
        )


def _device_count() -> int:
    """How many XLA devices this process can address (0 without torch_xla or a TPU)."""
    if not _xla_installed():
        return 0
    try:
        runtime = importlib.import_module("torch_xla.runtime")
        return int(runtime.addressable_device_count())
    except (ImportError, AttributeError, RuntimeError, ValueError, OSError):
        return 0


def _parse_tpu_devices(devices: Any, available: int) -> list[int]:
    """``devices`` as XLA device indices: ``1`` / ``"1"`` / ``"auto"`` -> ``[0]``, ``[i]`` / ``"[i]"`` -> ``[i]``.

    Raises:
        MisconfigurationException: for several devices (no multi-core launcher) or an unknown index.
    """
    text = devices.strip() if isinstance(devices, str) else None
    if text == "auto":
        devices = 1
    elif text is not None:
        inner = text.strip("[]")
        devices = [int(inner)] if text.startswith("[") and inner.isdigit() else (int(text) if text.isdigit() else text)
    if isinstance(devices, int) and not isinstance(devices, bool) and devices == 1:
        ids = [0]
    elif isinstance(devices, (list, tuple)) and len(devices) == 1 and isinstance(devices[0], int):
        ids = [int(devices[0])]
    elif isinstance(devices, int) and not isinstance(devices, bool) and devices > 1:
        raise MisconfigurationException(
            f"`Trainer(accelerator='tpu', devices={devices})`: multi-core TPU training needs an XLA launcher,"
            " which torchbolt does not provide yet. Use `devices=1` (or `devices=[i]` for core i)."
        )
    else:
        raise MisconfigurationException(
            f"`Trainer(accelerator='tpu', devices={devices!r})` is invalid: pass 1, 'auto' or a one-element list"
            " such as [0]."
        )
    if available and ids[0] >= available:
        raise MisconfigurationException(
            f"`Trainer(accelerator='tpu', devices={devices!r})`: only {available} XLA device(s) are addressable."
        )
    return ids


class XLAAccelerator(Accelerator):
    """Google TPUs (and other XLA devices) through ``torch_xla``. Experimental."""

    def setup_device(self, device: torch.device) -> None:
        if device.type != "xla":
            raise MisconfigurationException(f"Device should be XLA, got {device} instead.")

    @staticmethod
    def parse_devices(devices: Any) -> list[int]:
        return _parse_tpu_devices(devices, _device_count())

    @staticmethod
    def get_parallel_devices(devices: Any) -> list[torch.device]:
        ids = devices if isinstance(devices, list) and all(isinstance(i, int) for i in devices) else (
            XLAAccelerator.parse_devices(devices))
        return [torch.device("xla", i) for i in ids]

    @staticmethod
    def auto_device_count() -> int:
        return _device_count()

    @staticmethod
    def is_available() -> bool:
        return _device_count() > 0

    def get_device_stats(self, device: torch.device | str | int) -> dict[str, Any]:
        xm = importlib.import_module("torch_xla.core.xla_model")
        info = xm.get_memory_info(device)
        if "bytes_used" in info:  # torch_xla >= 2.3 reports bytes
            used, limit = info["bytes_used"] / 2**20, info.get("bytes_limit", 0) / 2**20
        else:  # older releases report kilobytes free / total
            limit = info.get("kb_total", 0) / 1024
            used = limit - info.get("kb_free", 0) / 1024
        return {"memory used (MB)": used, "memory limit (MB)": limit}
