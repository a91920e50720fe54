"""Plug-ins: precision, checkpoint I/O and cluster environments."""

from torchbolt.plugins.environments import ClusterEnvironment, LightningEnvironment
from torchbolt.plugins.io import CheckpointIO, TorchCheckpointIO
from torchbolt.plugins.precision import Precision

__all__ = ["CheckpointIO", "ClusterEnvironment", "LightningEnvironment", "Precision", "TorchCheckpointIO"]
