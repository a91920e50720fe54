"""``precision="16-true"`` / ``"bf16-true"``: everything in half precision, no fp32 master weights."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Literal

import torch
from torch import nn

from torchbolt.plugins.precision.precision import Precision
from torchbolt.plugins.precision.utils import _DtypeContextManager, convert_floating_point


class HalfPrecision(Precision):
    """Train with parameters, inputs and activations in ``float16`` or ``bfloat16``.

    Halves memory against fp32 (no fp32 copy of the weights is kept, unlike ``"*-mixed"``), at the
    cost of accuracy: small updates can vanish in a 16-bit weight. ``bf16-true`` keeps fp32's
    range and is the usual choice for fine-tuning large models; ``16-true`` can overflow.

    Args:
        precision: ``"16-true"`` (float16) or ``"bf16-true"`` (bfloat16).

    Raises:
        ValueError: for another precision string.

    Example::

        trainer = Trainer(precision="bf16-true")
        with trainer.init_module():      # create the weights directly in bfloat16
            model = MyModel()
    """

    precision = "16-true"

    def __init__(self, precision: Literal["16-true", "bf16-true"] = "16-true") -> None:
        if precision not in ("16-true", "bf16-true"):
            raise ValueError(f"`HalfPrecision(precision={precision!r})`: use '16-true' or 'bf16-true'.")
        self.precision = precision
        self._desired_input_dtype = torch.bfloat16 if precision == "bf16-true" else torch.float16

    def convert_module(self, module: nn.Module) -> nn.Module:
        return module.to(dtype=self._desired_input_dtype)

    def convert_input(self, data: Any) -> Any:
        return convert_floating_point(data, self._desired_input_dtype)

    def tensor_init_context(self) -> AbstractContextManager[Any]:
        return _DtypeContextManager(self._desired_input_dtype)

    def forward_context(self) -> AbstractContextManager[Any]:
        return _DtypeContextManager(self._desired_input_dtype)
