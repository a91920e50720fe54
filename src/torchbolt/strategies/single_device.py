"""One process, one device."""

from __future__ import annotations

from typing import Any

import torch

from torchbolt.accelerators.accelerator import Accelerator
from torchbolt.plugins.io.checkpoint_io import CheckpointIO
from torchbolt.plugins.precision.precision import Precision
from torchbolt.strategies.strategy import Strategy


class SingleDeviceStrategy(Strategy):
    """Trains on one device in the current process (the default on CPU or one GPU).

    Args:
        device: ``"cpu"``, ``"cuda:0"``, a ``torch.device`` or a CUDA index.
    """

    strategy_name = "single_device"

    def __init__(
        self,
        device: torch.device | str | int = "cpu",
        accelerator: Accelerator | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Precision | None = None,
    ) -> None:
        super().__init__(accelerator=accelerator, checkpoint_io=checkpoint_io, precision_plugin=precision_plugin)
        if isinstance(device, int):
            device = torch.device("cuda", device)
        self._root_device = torch.device(device)

    @property
    def root_device(self) -> torch.device:
        return self._root_device

    @property
    def is_global_zero(self) -> bool:
        return True

    def all_gather(self, tensor: Any, group: Any | None = None, sync_grads: bool = False) -> Any:
        return tensor
