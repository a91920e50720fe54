"""Transformer Engine and bitsandbytes precisions: clear errors without the package, and the layer
conversion checked against a stand-in ``bitsandbytes`` module (neither runs without a CUDA GPU)."""

from __future__ import annotations

import importlib.machinery
import sys
import types
from typing import Any

import pytest
import torch
from torch import nn

import torchbolt as pl
from torchbolt.plugins.precision import BitsandbytesPrecision, TransformerEnginePrecision
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.imports import module_available

_TE = module_available("transformer_engine")
_BNB = module_available("bitsandbytes")


@pytest.mark.skipif(_TE, reason="transformer_engine is installed here")
def test_transformer_engine_plugin_without_the_package_says_how_to_install() -> None:
    with pytest.raises(ModuleNotFoundError, match=r"pip install transformer-engine"):
        TransformerEnginePrecision(weights_dtype=torch.bfloat16)


@pytest.mark.parametrize("precision", ["transformer-engine", "transformer-engine-float16"])
def test_transformer_engine_precision_needs_a_gpu(precision: str) -> None:
    with pytest.raises(MisconfigurationException, match="needs an NVIDIA GPU"):
        pl.Trainer(accelerator="cpu", precision=precision, max_epochs=1)


@pytest.mark.skipif(_BNB, reason="bitsandbytes is installed here")
def test_bitsandbytes_plugin_without_the_package_says_how_to_install() -> None:
    with pytest.raises(ModuleNotFoundError, match=r"pip install bitsandbytes"):
        BitsandbytesPrecision("nf4")


@pytest.mark.parametrize("mode", ["nf4", "nf4-dq", "fp4", "fp4-dq", "int8", "int8-training"])
def test_bitsandbytes_precisions_need_a_gpu(mode: str) -> None:
    with pytest.raises(MisconfigurationException, match="bitsandbytes quantization needs a CUDA GPU"):
        pl.Trainer(accelerator="cpu", precision=mode, max_epochs=1)


class _StandInParams(nn.Parameter):
    def __new__(cls, data: torch.Tensor, requires_grad: bool = False, **kwargs: Any) -> _StandInParams:
        param = super().__new__(cls, data, requires_grad)
        param.quant_kwargs = kwargs
        return param


class _StandInLinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, **kwargs: Any) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.layer_kwargs = kwargs


@pytest.fixture
def stand_in_bitsandbytes(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    bnb = types.ModuleType("bitsandbytes")
    bnb.__spec__ = importlib.machinery.ModuleSpec("bitsandbytes", None)
    bnb_nn = types.ModuleType("bitsandbytes.nn")
    for name in ("Linear4bit", "Linear8bitLt"):
        setattr(bnb_nn, name, type(name, (_StandInLinear,), {"__module__": "bitsandbytes.nn.modules"}))
    for name in ("Params4bit", "Int8Params"):
        setattr(bnb_nn, name, type(name, (_StandInParams,), {}))
    bnb.nn = bnb_nn  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bitsandbytes", bnb)
    monkeypatch.setitem(sys.modules, "bitsandbytes.nn", bnb_nn)
    return bnb


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8)), nn.LayerNorm(8))


def test_nf4_double_quant_replaces_every_linear_and_copies_weights(stand_in_bitsandbytes: Any) -> None:
    model = _model()
    original = model[0].weight.detach().clone()
    converted = BitsandbytesPrecision("nf4-dq").convert_module(model)
    assert type(converted[0]).__name__ == "Linear4bit" and type(converted[2][0]).__name__ == "Linear4bit"
    assert converted[0].layer_kwargs == {"compute_dtype": torch.bfloat16, "quant_type": "nf4",
                                         "compress_statistics": True}
    assert torch.equal(converted[0].weight.float(), original.to(torch.bfloat16).float())
    assert not converted[0].weight.requires_grad  # 4-bit weights are frozen
    assert converted[3].weight.dtype == torch.bfloat16  # other layers use the compute dtype


def test_int8_training_keeps_trainable_weights_and_ignore_modules_stay_linear(stand_in_bitsandbytes: Any) -> None:
    converted = BitsandbytesPrecision("int8-training", ignore_modules={"2"}).convert_module(_model())
    assert type(converted[0]).__name__ == "Linear8bitLt"
    assert converted[0].layer_kwargs == {"has_fp16_weights": True, "threshold": 6.0}
    assert converted[0].weight.requires_grad
    assert type(converted[2][0]) is nn.Linear


def test_int8_modes_require_float16(stand_in_bitsandbytes: Any) -> None:
    with pytest.raises(ValueError, match="float16"):
        BitsandbytesPrecision("int8", dtype=torch.bfloat16)


def test_model_without_linear_layers_is_rejected(stand_in_bitsandbytes: Any) -> None:
    with pytest.raises(TypeError, match="no"):
        BitsandbytesPrecision("fp4").convert_module(nn.Sequential(nn.ReLU()))
