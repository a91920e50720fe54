"""Map a ``Trainer(precision=...)`` string to its precision plug-in: the one place that does it.

A strategy with its own precision handling (FSDP's mixed-precision policy, DeepSpeed's engine)
takes over by defining ``_resolve_precision_plugin(precision, device_type) -> Precision | None``;
returning ``None`` falls back to the table below.
"""

from __future__ import annotations

from typing import Any

import torch

from torchbolt.plugins.precision.amp import MixedPrecision
from torchbolt.plugins.precision.bitsandbytes import _MODES as _BITSANDBYTES_MODES
from torchbolt.plugins.precision.bitsandbytes import BitsandbytesPrecision
from torchbolt.plugins.precision.double import DoublePrecision
from torchbolt.plugins.precision.half import HalfPrecision
from torchbolt.plugins.precision.precision import Precision
from torchbolt.plugins.precision.transformer_engine import TransformerEnginePrecision
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import rank_zero_warn

_TRANSFORMER_ENGINE_MODES = ("transformer-engine", "transformer-engine-float16")


def precision_plugin_for(precision: str, device_type: str, strategy: Any = None) -> Precision:
    """The plug-in for the canonical ``precision`` string on a ``device_type`` ("cpu", "cuda", "mps", "xla").

    Raises:
        MisconfigurationException: when the precision cannot run on that device, naming an alternative.
        ModuleNotFoundError: for an optional back-end (Transformer Engine, bitsandbytes) that is not installed.
    """
    hook = getattr(strategy, "_resolve_precision_plugin", None)
    if hook is not None:
        plugin = hook(precision, device_type)
        if plugin is not None:
            return plugin
    if device_type == "xla":
        return _xla_precision(precision)
    if precision in ("32-true", "64-true"):
        return _full_precision(precision, device_type)
    if precision in ("16-mixed", "bf16-mixed", "16-true", "bf16-true"):
        return _reduced_precision(precision, device_type)
    if precision in _TRANSFORMER_ENGINE_MODES or precision in _BITSANDBYTES_MODES:
        return _cuda_backend_precision(precision, device_type)
    raise MisconfigurationException(f"`Trainer(precision={precision!r})` is not supported.")


def _full_precision(precision: str, device_type: str) -> Precision:
    """The plug-in for ``"32-true"`` or ``"64-true"``; float64 is refused on MPS."""
    if precision == "32-true":
        return Precision()
    if device_type == "mps":
        raise _unavailable(precision, device_type, "MPS has no float64 support; use '32-true'")
    return DoublePrecision()


def _reduced_precision(precision: str, device_type: str) -> Precision:
    """The plug-in for ``"16-mixed"``, ``"bf16-mixed"``, ``"16-true"`` or ``"bf16-true"`` off XLA.

    Raises:
        MisconfigurationException: for float16 mixed precision on CPU, or bfloat16 on a GPU without it.
    """
    if precision == "16-mixed":
        if device_type == "cpu":
            raise _unavailable(
                precision, device_type,
                "float16 mixed precision with gradient scaling needs a CUDA GPU; on CPU use 'bf16-mixed'"
                " (bfloat16 autocast, no scaler needed) or '32-true'",
            )
        return MixedPrecision("16-mixed", device_type)
    if precision == "bf16-mixed":
        if device_type == "cuda" and not torch.cuda.is_bf16_supported():
            raise _unavailable(precision, device_type, "this GPU does not support bfloat16; use '16-mixed'")
        return MixedPrecision("bf16-mixed", device_type)
    if precision == "bf16-true" and device_type == "cuda" and not torch.cuda.is_bf16_supported():
        raise _unavailable(precision, device_type, "this GPU does not support bfloat16; use '16-true'")
    return HalfPrecision(precision)  # type: ignore[arg-type]


def _cuda_backend_precision(precision: str, device_type: str) -> Precision:
    """The plug-in for a Transformer Engine or bitsandbytes ``precision``; both need a CUDA device.

    Raises:
        MisconfigurationException: when ``device_type`` is not ``"cuda"``.
        ModuleNotFoundError: when the back-end is not installed.
    """
    if precision in _TRANSFORMER_ENGINE_MODES:
        if device_type != "cuda":
            raise _unavailable(precision, device_type, "FP8 through Transformer Engine needs an NVIDIA GPU")
        dtype = torch.bfloat16 if precision == "transformer-engine" else torch.float16
        return TransformerEnginePrecision(weights_dtype=dtype)
    if device_type != "cuda":
        raise _unavailable(precision, device_type, "bitsandbytes quantization needs a CUDA GPU")
    return BitsandbytesPrecision(mode=precision)  # type: ignore[arg-type]


def _unavailable(precision: str, device_type: str, reason: str) -> MisconfigurationException:
    return MisconfigurationException(
        f"`Trainer(precision={precision!r})` cannot run on {device_type!r}: {reason}."
    )


def _xla_precision(precision: str) -> Precision:
    from torchbolt.plugins.precision.xla import XLAPrecision

    if precision in ("16-mixed", "bf16-mixed"):
        replacement = precision.replace("-mixed", "-true")
        rank_zero_warn(
            f"`precision={precision!r}` is not supported on XLA devices; `precision={replacement!r}` is used instead."
        )
        precision = replacement
    if precision not in ("32-true", "16-true", "bf16-true"):
        raise _unavailable(precision, "xla", "use '32-true', '16-true' or 'bf16-true'")
    return XLAPrecision(precision)  # type: ignore[arg-type]
