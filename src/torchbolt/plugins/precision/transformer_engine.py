"""``precision="transformer-engine"``: FP8 matrix multiplies through NVIDIA Transformer Engine (optional)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from contextlib import AbstractContextManager, ExitStack
from typing import Any

import torch
from torch import nn

from torchbolt.plugins.precision.precision import Precision
from torchbolt.plugins.precision.utils import _DtypeContextManager, convert_floating_point
from torchbolt.utilities.rank_zero import rank_zero_warn


def _import_transformer_engine() -> Any:
    try:
        return importlib.import_module("transformer_engine.pytorch")
    except ImportError as e:
        raise ModuleNotFoundError(
            "`precision='transformer-engine'` needs NVIDIA Transformer Engine, which is not installed. Install it"
            " with `pip install transformer-engine[pytorch]` on a machine with an FP8-capable GPU (Hopper or"
            " newer), or use `precision='bf16-mixed'`."
        ) from e


class TransformerEnginePrecision(Precision):
    """FP8 training with `Transformer Engine <https://docs.nvidia.com/deeplearning/transformer-engine>`_.

    ``nn.Linear`` and ``nn.LayerNorm`` layers are replaced by Transformer Engine's (weights copied),
    weights are kept in ``weights_dtype``, and every step runs under ``te.fp8_autocast`` inside a
    ``torch.autocast`` to ``fallback_compute_dtype`` for the operations FP8 does not cover.

    Args:
        weights_dtype: the parameters' dtype (``torch.bfloat16`` for ``"transformer-engine"``,
            ``torch.float16`` for ``"transformer-engine-float16"``).
        recipe: a ``transformer_engine.common.recipe.DelayedScaling`` or a dict of its arguments
            (``"fp8_format"`` may be the name of a ``Format`` member, e.g. ``"HYBRID"``).
        replace_layers: replace ``Linear``/``LayerNorm`` layers (default: unless the model already
            contains Transformer Engine layers).
        fallback_compute_dtype: the autocast dtype of non-FP8 operations (default ``weights_dtype``).

    Raises:
        ModuleNotFoundError: when ``transformer_engine`` is not installed.
    """

    precision = "transformer-engine"

    def __init__(self, *, weights_dtype: torch.dtype, recipe: Any = None, replace_layers: bool | None = None,
                 fallback_compute_dtype: torch.dtype | None = None) -> None:
        _import_transformer_engine()
        recipe_module = importlib.import_module("transformer_engine.common.recipe")
        if recipe is None:
            recipe = recipe_module.DelayedScaling()
        elif isinstance(recipe, Mapping):
            recipe = dict(recipe)
            if isinstance(recipe.get("fp8_format"), str):
                recipe["fp8_format"] = getattr(recipe_module.Format, recipe["fp8_format"])
            recipe = recipe_module.DelayedScaling(**recipe)
        self.weights_dtype = weights_dtype
        self.recipe = recipe
        self.replace_layers = replace_layers
        self.fallback_compute_dtype = fallback_compute_dtype or weights_dtype
        if weights_dtype == torch.float16:
            self.precision = "transformer-engine-float16"

    def convert_module(self, module: nn.Module) -> nn.Module:
        has_te_layers = any("transformer_engine" in type(m).__module__ for m in module.modules())
        if self.replace_layers is True or (self.replace_layers is None and not has_te_layers):
            _replace_layers(module, _import_transformer_engine())
        return module.to(dtype=self.weights_dtype)

    def convert_input(self, data: Any) -> Any:
        return convert_floating_point(data, self.weights_dtype)

    def convert_output(self, data: Any) -> Any:
        return convert_floating_point(data, torch.get_default_dtype())

    def tensor_init_context(self) -> AbstractContextManager[Any]:
        return _DtypeContextManager(self.weights_dtype)

    def forward_context(self) -> AbstractContextManager[Any]:
        te = _import_transformer_engine()
        stack = ExitStack()
        stack.enter_context(_DtypeContextManager(self.weights_dtype))
        # the outer autocast covers operations that FP8 autocast does not
        stack.enter_context(torch.autocast(device_type="cuda", dtype=self.fallback_compute_dtype))
        stack.enter_context(te.fp8_autocast(enabled=True, fp8_recipe=self.recipe))
        return stack


def _replace_layers(module: nn.Module, te: Any) -> None:
    """Swap ``nn.Linear``/``nn.LayerNorm`` children (recursively) for Transformer Engine layers."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            if child.in_features % 8 or child.out_features % 16:
                rank_zero_warn(
                    f"Layer {name!r} ({child.in_features} -> {child.out_features}) stays a torch `Linear`: FP8"
                    " needs input features divisible by 8 and output features divisible by 16."
                )
                continue
            replacement = te.Linear(child.in_features, child.out_features, bias=child.bias is not None)
            replacement.weight.data = child.weight.data.clone()
            if child.bias is not None:
                replacement.bias.data = child.bias.data.clone()
            setattr(module, name, replacement)
        elif isinstance(child, nn.LayerNorm) and child.weight is not None and child.bias is not None:
            replacement = te.LayerNorm(child.normalized_shape[0], eps=child.eps)
            replacement.weight.data = child.weight.data.clone()
            replacement.bias.data = child.bias.data.clone()
            setattr(module, name, replacement)
        else:
            _replace_layers(child, te)
