"""Precision plug-ins, at ``torchbolt.plugins.precision`` (``Trainer(precision=...)`` picks one for you).

The optional back-ends (Transformer Engine, bitsandbytes, torch_xla, deepspeed) are imported only when their
plug-in is constructed.
"""

from torchbolt.plugins.precision.amp import MixedPrecision
from torchbolt.plugins.precision.bitsandbytes import BitsandbytesPrecision
from torchbolt.plugins.precision.deepspeed import DeepSpeedPrecision
from torchbolt.plugins.precision.double import DoublePrecision
from torchbolt.plugins.precision.fsdp import FSDPPrecision
from torchbolt.plugins.precision.half import HalfPrecision
from torchbolt.plugins.precision.precision import Precision
from torchbolt.plugins.precision.transformer_engine import TransformerEnginePrecision
from torchbolt.plugins.precision.xla import XLAPrecision

__all__ = [
    "BitsandbytesPrecision", "DeepSpeedPrecision", "DoublePrecision", "FSDPPrecision", "HalfPrecision", "MixedPrecision", "Precision",
    "TransformerEnginePrecision", "XLAPrecision",
]
