"""``DeepSpeedPrecision``: the precision of a ``DeepSpeedStrategy`` run (DeepSpeed's engine does the casting)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Literal

import torch
from torch import nn

from torchbolt.plugins.precision.precision import _NO_OP_CONTEXT, Precision
from torchbolt.plugins.precision.utils import _DtypeContextManager, convert_floating_point

_DEEPSPEED_PRECISIONS = ("32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed")


def _require_deepspeed() -> None:
    """Raise a clear error when ``deepspeed`` cannot be imported.

    Raises:
        ModuleNotFoundError: naming the package and how to install it.
    """
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        raise ModuleNotFoundError(
            "`DeepSpeedPrecision` needs the `deepspeed` package, which is not installed. Install it with"
            " `pip install deepspeed` (or `pip install 'torchbolt[deepspeed]'`)."
        )


class DeepSpeedPrecision(Precision):
    """Precision for ``DeepSpeedStrategy``: sets the engine's ``fp16``/``bf16`` mode and casts the inputs.

    DeepSpeed keeps fp32 master weights itself and runs the model in the chosen 16-bit dtype for both
    the ``"*-mixed"`` and ``"*-true"`` settings, so the inputs of every step are cast to that dtype here;
    backward and the optimizer step are the engine's.

    Args:
        precision: ``"32-true"``, ``"16-true"``, ``"bf16-true"``, ``"16-mixed"`` or ``"bf16-mixed"``.

    Raises:
        ModuleNotFoundError: ``deepspeed`` is not installed.
        ValueError: for another precision string.

    Example::

        trainer = Trainer(strategy="deepspeed_stage_2", plugins=[DeepSpeedPrecision("bf16-mixed")])
    """

    def __init__(self, precision: Literal["32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed"]) -> None:
        _require_deepspeed()
        if precision not in _DEEPSPEED_PRECISIONS:
            raise ValueError(
                f"`DeepSpeedPrecision(precision={precision!r})` is not supported: use one of"
                f" {list(_DEEPSPEED_PRECISIONS)}."
            )
        self.precision = precision
        self._desired_dtype = (torch.float16 if precision.startswith("16") else
                               torch.bfloat16 if precision.startswith("bf16") else torch.float32)

    def convert_module(self, module: nn.Module) -> nn.Module:
        # the "-true" settings hold the weights in 16 bit from the start; for "-mixed" the engine casts
        return module.to(dtype=self._desired_dtype) if self.precision.endswith("-true") else module

    def convert_input(self, data: Any) -> Any:
        return convert_floating_point(data, self._desired_dtype)

    def tensor_init_context(self) -> AbstractContextManager[Any]:
        if self.precision.endswith("-true") and self._desired_dtype != torch.float32:
            return _DtypeContextManager(self._desired_dtype)
        return _NO_OP_CONTEXT
