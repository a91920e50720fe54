"""Checkpoint I/O plug-ins."""

from torchbolt.plugins.io.checkpoint_io import CheckpointIO
from torchbolt.plugins.io.torch_io import TorchCheckpointIO

__all__ = ["CheckpointIO", "TorchCheckpointIO"]
