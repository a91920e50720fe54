"""``XLACheckpointIO``: checkpoints of a run on XLA devices (TPUs), written through ``torch.save``."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from torchbolt.plugins.io.checkpoint_io import _PATH
from torchbolt.plugins.io.torch_io import TorchCheckpointIO
from torchbolt.utilities.apply_func import apply_to_collection


class XLACheckpointIO(TorchCheckpointIO):
    """Moves every tensor of the checkpoint from the XLA device to the CPU, then saves it like ``torch.save``.

    XLA tensors are lazy device handles; saving them directly would record device state that cannot be
    loaded elsewhere. The file written is an ordinary checkpoint that loads on any machine.

    Raises:
        ModuleNotFoundError: ``torch_xla`` is not installed (raised when the plug-in is created).

    Example::

        trainer = Trainer(accelerator="tpu", plugins=[XLACheckpointIO()])
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from torchbolt.accelerators.xla import _require_xla

        _require_xla()
        super().__init__(*args, **kwargs)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        import torch_xla.core.xla_model as xm

        # every process reaches this point before tensors are read back (the device graph is complete)
        xm.mark_step()
        on_cpu = apply_to_collection(checkpoint, Tensor, lambda tensor: tensor.cpu())
        super().save_checkpoint(on_cpu, path, storage_options=storage_options)
