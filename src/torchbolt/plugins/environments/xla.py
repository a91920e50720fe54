"""``XLAEnvironment``: ranks and world size of a TPU job, read from ``torch_xla``'s runtime."""

from __future__ import annotations

import os
from typing import Any

from torchbolt.plugins.environments.cluster_environment import ClusterEnvironment


def _runtime() -> Any:
    import torch_xla.runtime as xr

    return xr


class XLAEnvironment(ClusterEnvironment):
    """The process layout of an XLA (TPU) job as ``torch_xla.runtime`` reports it.

    The XLA runtime starts and connects the processes itself, so there is no rendezvous address to
    give and the ranks cannot be overridden.

    Raises:
        ModuleNotFoundError: ``torch_xla`` is not installed (raised when the environment is created).

    Example::

        Trainer(accelerator="tpu", plugins=[XLAEnvironment()])
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from torchbolt.accelerators.xla import _require_xla

        _require_xla()
        super().__init__()

    @property
    def creates_processes_externally(self) -> bool:
        return False

    @property
    def main_address(self) -> str:
        # the XLA runtime handles the rendezvous; torch.distributed is not initialized with it
        return os.environ.get("MASTER_ADDR", "localhost")

    @property
    def main_port(self) -> int:
        return int(os.environ.get("MASTER_PORT", 12355))

    @staticmethod
    def detect() -> bool:
        """Whether ``torch_xla`` is installed and sees at least one device."""
        from torchbolt.accelerators.xla import _device_count

        return _device_count() > 0

    def world_size(self) -> int:
        return int(_runtime().world_size())

    def set_world_size(self, size: int) -> None:
        # fixed by the XLA runtime; nothing to set
        pass

    def global_rank(self) -> int:
        return int(_runtime().global_ordinal())

    def set_global_rank(self, rank: int) -> None:
        # fixed by the XLA runtime; nothing to set
        pass

    def local_rank(self) -> int:
        return int(_runtime().local_ordinal())

    def node_rank(self) -> int:
        return int(os.environ.get("XRT_HOST_ORDINAL", 0))
