"""``FSDPPrecision``: a precision for ``FSDPStrategy``, passed as ``Trainer(plugins=[FSDPPrecision(...)])``."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from torchbolt.plugins.precision.amp import MixedPrecision
from torchbolt.plugins.precision.half import HalfPrecision
from torchbolt.plugins.precision.precision import Precision
from torchbolt.utilities.exceptions import MisconfigurationException

_FSDP_PRECISIONS = ("32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed")
# (parameter dtype in forward/backward, gradient reduction dtype) of FSDP2's MixedPrecisionPolicy
_POLICY_DTYPES = {"bf16-mixed": (torch.bfloat16, torch.float32), "16-mixed": (torch.float16, torch.float32),
                  "bf16-true": (torch.bfloat16, torch.bfloat16), "16-true": (torch.float16, torch.float16)}


def fsdp_mixed_precision_policy(precision: str) -> Any:
    """FSDP2's ``MixedPrecisionPolicy`` for a precision string, or ``None`` for full precision."""
    pair = _POLICY_DTYPES.get(precision)
    if pair is None:
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=pair[0], reduce_dtype=pair[1])


class FSDPPrecision(Precision):
    """Numeric precision under ``FSDPStrategy``: FSDP2's mixed-precision policy plus what runs around it.

    The strategy shards with :attr:`mixed_precision_config` (parameters gathered in the low-precision
    dtype, gradients reduced in fp32 for the ``*-mixed`` settings); the step itself runs as with the
    matching ordinary plug-in: ``torch.autocast`` for ``"*-mixed"`` (with a gradient scaler for
    ``"16-mixed"``), the module and inputs cast for ``"*-true"``.

    Args:
        precision: ``"32-true"``, ``"16-true"``, ``"bf16-true"``, ``"16-mixed"`` or ``"bf16-mixed"``.
        scaler: a gradient scaler for ``"16-mixed"`` (default: torch's ``ShardedGradScaler``).

    Raises:
        ValueError: for another precision string, or a scaler with a precision other than ``"16-mixed"``.
        MisconfigurationException: ``"16-mixed"`` without CUDA (use ``"bf16-mixed"`` on CPU).

    Example::

        trainer = Trainer(strategy="fsdp", devices=2, plugins=[FSDPPrecision("bf16-mixed")])
    """

    def __init__(
        self,
        precision: Literal["32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed"],
        scaler: Any | None = None,
    ) -> None:
        if precision not in _FSDP_PRECISIONS:
            raise ValueError(
                f"`FSDPPrecision(precision={precision!r})` is not supported: use one of {list(_FSDP_PRECISIONS)}."
            )
        if scaler is not None and precision != "16-mixed":
            raise ValueError(f"`FSDPPrecision(precision={precision!r})` takes no scaler; only '16-mixed' scales.")
        self.precision = precision
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self._inner: Precision
        if precision == "16-mixed":
            if device != "cuda":
                raise MisconfigurationException(
                    "`FSDPPrecision('16-mixed')` needs a CUDA GPU (float16 with gradient scaling); on CPU use"
                    " 'bf16-mixed'."
                )
            if scaler is None:
                from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

                scaler = ShardedGradScaler()
            self._inner = MixedPrecision("16-mixed", device, scaler=scaler)
        elif precision == "bf16-mixed":
            self._inner = MixedPrecision("bf16-mixed", device)
        elif precision in ("16-true", "bf16-true"):
            self._inner = HalfPrecision(precision)  # type: ignore[arg-type]
        else:
            self._inner = Precision()

    @property
    def mixed_precision_config(self) -> Any:
        """The ``torch.distributed.fsdp.MixedPrecisionPolicy`` the strategy shards with (``None``: fp32)."""
        return fsdp_mixed_precision_policy(self.precision)

    @property
    def scaler(self) -> Any:
        """The gradient scaler (``"16-mixed"`` only; ``None`` otherwise)."""
        return getattr(self._inner, "scaler", None)

    # every step of the run is the matching ordinary plug-in's
    def convert_module(self, module: nn.Module) -> nn.Module:
        return self._inner.convert_module(module)

    def convert_input(self, data: Any) -> Any:
        return self._inner.convert_input(data)

    def convert_output(self, data: Any) -> Any:
        return self._inner.convert_output(data)

    def forward_context(self) -> AbstractContextManager[Any]:
        return self._inner.forward_context()

    def tensor_init_context(self) -> AbstractContextManager[Any]:
        return self._inner.tensor_init_context()

    def module_init_context(self) -> AbstractContextManager[Any]:
        return self._inner.module_init_context()

    def pre_backward(self, tensor: Tensor, module: nn.Module | None) -> Tensor:
        return self._inner.pre_backward(tensor, module)

    def backward(self, tensor: Tensor, model: Any, optimizer: Optimizer | None, *args: Any, **kwargs: Any) -> None:
        self._inner.backward(tensor, model, optimizer, *args, **kwargs)

    def post_backward(self, tensor: Tensor, module: nn.Module | None) -> Tensor:
        return self._inner.post_backward(tensor, module)

    def optimizer_step(self, optimizer: Optimizer, closure: Callable[[], Any],
                       on_gradients_ready: Callable[[Optimizer], None], **kwargs: Any) -> Any:
        return self._inner.optimizer_step(optimizer, closure, on_gradients_ready, **kwargs)

    def unscale_gradients(self, optimizer: Optimizer) -> None:
        self._inner.unscale_gradients(optimizer)

    def clip_gradients(self, optimizer: Optimizer, clip_val: float, gradient_clip_algorithm: str) -> None:
        self._inner.clip_gradients(optimizer, clip_val, gradient_clip_algorithm)

    def state_dict(self) -> dict[str, Any]:
        return self._inner.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._inner.load_state_dict(state_dict)

    def teardown(self) -> None:
        self._inner.teardown()
