"""Quantized ``nn.Linear`` weights through bitsandbytes: ``"nf4"``, ``"nf4-dq"``, ``"fp4"``, ``"fp4-dq"``,
``"int8"``, ``"int8-training"`` (optional dependency)."""

from __future__ import annotations

import importlib
from contextlib import AbstractContextManager
from typing import Any, Literal

import torch
from torch import nn

from torchbolt.plugins.precision.precision import Precision
from torchbolt.plugins.precision.utils import _DtypeContextManager, convert_floating_point

_MODES = ("nf4", "nf4-dq", "fp4", "fp4-dq", "int8", "int8-training")


def _import_bitsandbytes() -> Any:
    try:
        return importlib.import_module("bitsandbytes")
    except ImportError as e:
        raise ModuleNotFoundError(
            "The bitsandbytes precisions ('nf4', 'nf4-dq', 'fp4', 'fp4-dq', 'int8', 'int8-training') need"
            " `bitsandbytes`, which is not installed. Install it with `pip install bitsandbytes` (a CUDA GPU"
            " is required), or use `precision='bf16-true'`."
        ) from e


class BitsandbytesPrecision(Precision):
    """Replace the model's ``nn.Linear`` layers by bitsandbytes' quantized layers.

    4-bit modes (``nf4``, ``fp4``; ``-dq`` adds double quantization of the scales) and ``int8`` freeze
    the quantized weights, so they suit fine-tuning with adapters (e.g. LoRA) or inference;
    ``int8-training`` keeps trainable 16-bit weights. The weights are quantized when the model is
    moved to the GPU. Other parameters and the computation use ``dtype``.

    Args:
        mode: the quantization mode.
        dtype: the compute dtype (default float16 for the int8 modes, else bfloat16).
        ignore_modules: names of submodules (as in ``named_modules``) whose layers stay unquantized.

    Raises:
        ModuleNotFoundError: when ``bitsandbytes`` is not installed.
        ValueError: for an unknown mode, or an int8 mode with a dtype other than float16.
    """

    def __init__(self, mode: Literal["nf4", "nf4-dq", "fp4", "fp4-dq", "int8", "int8-training"],
                 dtype: torch.dtype | None = None, ignore_modules: set[str] | None = None) -> None:
        if mode not in _MODES:
            raise ValueError(f"`BitsandbytesPrecision(mode={mode!r})`: choose one of {list(_MODES)}.")
        _import_bitsandbytes()
        if dtype is None:
            dtype = torch.float16 if mode.startswith("int8") else torch.bfloat16
        if mode.startswith("int8") and dtype != torch.float16:
            raise ValueError(f"{mode!r} only works with `dtype=torch.float16`, but you chose `{dtype}`.")
        self.precision = mode
        self.mode = mode
        self.dtype = dtype
        self.ignore_modules = set(ignore_modules or ())

    def convert_module(self, module: nn.Module) -> nn.Module:
        """Swap every ``nn.Linear`` outside ``ignore_modules`` for its quantized counterpart.

        Raises:
            TypeError: when the model has no ``nn.Linear`` layer to quantize.
        """
        if not any(isinstance(m, nn.Linear) for m in module.modules()):
            raise TypeError(
                "The bitsandbytes precision quantizes `torch.nn.Linear` layers, but the model has none."
            )
        bnb = _import_bitsandbytes()
        for name, child in list(module.named_modules()):
            if any(name == ignored or name.startswith(f"{ignored}.") for ignored in self.ignore_modules):
                continue
            for child_name, layer in list(child.named_children()):
                full_name = f"{name}.{child_name}" if name else child_name
                if isinstance(layer, nn.Linear) and full_name not in self.ignore_modules:
                    setattr(child, child_name, self._quantized_linear(bnb, layer))
        for m in module.modules():
            if "bitsandbytes" not in type(m).__module__:
                for param in m.parameters(recurse=False):
                    if param.is_floating_point():
                        param.data = param.data.to(self.dtype)
        return module

    def _quantized_linear(self, bnb: Any, layer: nn.Linear) -> nn.Module:
        has_bias = layer.bias is not None
        if self.mode.startswith("int8"):
            trainable = self.mode == "int8-training"
            new = bnb.nn.Linear8bitLt(layer.in_features, layer.out_features, bias=has_bias,
                                      has_fp16_weights=trainable, threshold=6.0)
            new.weight = bnb.nn.Int8Params(layer.weight.data.to(self.dtype), requires_grad=trainable,
                                           has_fp16_weights=trainable)
        else:
            quant_type = self.mode.split("-")[0]
            double_quant = self.mode.endswith("-dq")
            new = bnb.nn.Linear4bit(layer.in_features, layer.out_features, bias=has_bias, compute_dtype=self.dtype,
                                    quant_type=quant_type, compress_statistics=double_quant)
            new.weight = bnb.nn.Params4bit(layer.weight.data.to(self.dtype), requires_grad=False,
                                           quant_type=quant_type, compress_statistics=double_quant)
        if has_bias:
            new.bias = nn.Parameter(layer.bias.data.to(self.dtype), requires_grad=layer.bias.requires_grad)
        return new

    def convert_input(self, data: Any) -> Any:
        return convert_floating_point(data, self.dtype)

    def convert_output(self, data: Any) -> Any:
        return convert_floating_point(data, torch.get_default_dtype())

    def tensor_init_context(self) -> AbstractContextManager[Any]:
        return _DtypeContextManager(self.dtype)

    def forward_context(self) -> AbstractContextManager[Any]:
        return _DtypeContextManager(self.dtype)
