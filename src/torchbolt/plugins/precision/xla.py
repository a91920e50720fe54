"""Precision on TPUs through ``torch_xla`` (experimental: no TPU was available to test on real hardware)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch.optim import Optimizer

from torchbolt.plugins.precision.precision import Precision


class XLAPrecision(Precision):
    """Runs the optimizer step on an XLA device and cuts the lazy graph after it (``xm.mark_step``).

    ``"16-true"`` / ``"bf16-true"`` ask XLA to compute in half precision through its documented
    environment variables ``XLA_USE_F16`` / ``XLA_USE_BF16`` (removed again at teardown).

    Args:
        precision: ``"32-true"``, ``"16-true"`` or ``"bf16-true"``.

    Raises:
        ModuleNotFoundError: when ``torch_xla`` is not installed.
        ValueError: for another precision.
    """

    def __init__(self, precision: Literal["32-true", "16-true", "bf16-true"] = "32-true") -> None:
        from torchbolt.accelerators.xla import _require_xla

        _require_xla()
        if precision not in ("32-true", "16-true", "bf16-true"):
            raise ValueError(
                f"`XLAPrecision(precision={precision!r})` is not supported: use '32-true', '16-true' or 'bf16-true'."
            )
        self.precision = precision
        if precision == "16-true":
            os.environ["XLA_USE_F16"] = "1"
            self._desired_dtype = torch.float16
        elif precision == "bf16-true":
            os.environ["XLA_USE_BF16"] = "1"
            self._desired_dtype = torch.bfloat16
        else:
            self._desired_dtype = torch.float32

    def optimizer_step(
        self,
        optimizer: Optimizer,
        closure: Callable[[], Any],
        on_gradients_ready: Callable[[Optimizer], None],
        **kwargs: Any,
    ) -> Any:
        """Closure, ``xm.reduce_gradients`` (a no-op on one device), hooks and clipping, the update, then
        ``xm.mark_step()`` so the step's graph is compiled and run."""
        import torch_xla.core.xla_model as xm

        def closure_then_hooks() -> Any:
            result = closure()
            xm.reduce_gradients(optimizer)
            on_gradients_ready(optimizer)
            return result

        output = optimizer.step(closure=closure_then_hooks, **kwargs)
        xm.mark_step()
        return output

    def teardown(self) -> None:
        os.environ.pop("XLA_USE_BF16", None)
        os.environ.pop("XLA_USE_F16", None)
