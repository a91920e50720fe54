"""Plug-ins: precision, checkpoint I/O and cluster environments."""

from torchbolt.plugins.environments import ClusterEnvironment, LightningEnvironment
from torchbolt.plugins.io import AsyncCheckpointIO, CheckpointIO, TorchCheckpointIO
from torchbolt.plugins.precision import (
    BitsandbytesPrecision,
    DoublePrecision,
    HalfPrecision,
    MixedPrecision,
    Precision,
    TransformerEnginePrecision,
    XLAPrecision,
)

__all__ = [
    "AsyncCheckpointIO", "BitsandbytesPrecision", "CheckpointIO", "ClusterEnvironment", "DoublePrecision", "HalfPrecision",
    "LightningEnvironment", "MixedPrecision", "Precision", "TorchCheckpointIO", "TransformerEnginePrecision",
    "XLAPrecision",
]
