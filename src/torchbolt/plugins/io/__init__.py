"""Checkpoint I/O plug-ins."""

from torchbolt.plugins.io.async_io import AsyncCheckpointIO, wait_for_checkpoint_writes
from torchbolt.plugins.io.checkpoint_io import CheckpointIO
from torchbolt.plugins.io.torch_io import TorchCheckpointIO
from torchbolt.plugins.io.xla import XLACheckpointIO

__all__ = ["AsyncCheckpointIO", "CheckpointIO", "TorchCheckpointIO", "XLACheckpointIO",
           "wait_for_checkpoint_writes"]
