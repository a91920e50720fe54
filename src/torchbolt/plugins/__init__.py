"""Plug-ins: precision, checkpoint I/O, cluster environments and layer synchronization."""

from torchbolt.plugins.environments import ClusterEnvironment, LightningEnvironment
from torchbolt.plugins.io import AsyncCheckpointIO, CheckpointIO, TorchCheckpointIO, XLACheckpointIO
from torchbolt.plugins.layer_sync import LayerSync, TorchSyncBatchNorm
from torchbolt.plugins.precision import (
    BitsandbytesPrecision,
    DeepSpeedPrecision,
    DoublePrecision,
    FSDPPrecision,
    HalfPrecision,
    MixedPrecision,
    Precision,
    TransformerEnginePrecision,
    XLAPrecision,
)

__all__ = [
    "AsyncCheckpointIO", "BitsandbytesPrecision", "CheckpointIO", "ClusterEnvironment", "DeepSpeedPrecision",
    "DoublePrecision", "FSDPPrecision", "HalfPrecision", "LayerSync", "LightningEnvironment", "MixedPrecision",
    "Precision", "TorchCheckpointIO", "TorchSyncBatchNorm", "TransformerEnginePrecision", "XLACheckpointIO",
    "XLAPrecision",
]
