"""``precision="16-mixed"`` / ``"bf16-mixed"``: ``torch.autocast``, with gradient scaling for float16."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch.optim import LBFGS, Optimizer

from torchbolt.core.optimizer import LightningOptimizer
from torchbolt.plugins.precision.precision import Precision
from torchbolt.utilities.exceptions import MisconfigurationException


def _optimizer_handles_unscaling(optimizer: Any) -> bool:
    """Fused optimizers (e.g. ``Adam(fused=True)``) unscale inside their own ``step``."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


def _unwrap(optimizer: Any) -> Any:
    """The torch optimizer inside a ``LightningOptimizer`` (the scaler keys its state by optimizer)."""
    return optimizer.optimizer if isinstance(optimizer, LightningOptimizer) else optimizer


def _has_gradients(optimizer: Optimizer) -> bool:
    return any(p.grad is not None for group in optimizer.param_groups for p in group["params"])


class MixedPrecision(Precision):
    """Automatic mixed precision: fp32 weights, the step's operations in float16/bfloat16 under
    ``torch.autocast``.

    With ``"16-mixed"`` a ``torch.amp.GradScaler`` multiplies the loss before backward so small
    float16 gradients do not flush to zero; before the optimizer step the gradients are unscaled
    (so ``on_before_optimizer_step`` and gradient clipping see true values), and a step whose
    gradients contain ``inf``/``NaN`` is skipped while the scale is lowered. The scaler's state is
    saved in checkpoints. ``"bf16-mixed"`` needs no scaler (bfloat16 has fp32's range) and runs on
    CPUs as well as GPUs.

    Args:
        precision: ``"16-mixed"`` or ``"bf16-mixed"``.
        device: the device type autocast applies to (``"cuda"``, ``"cpu"``, ``"mps"``).
        scaler: a ``torch.amp.GradScaler`` to use instead of the default one (``"16-mixed"`` only).

    Raises:
        ValueError: for another precision string.
        MisconfigurationException: for a scaler with ``"bf16-mixed"``.

    Example::

        trainer = Trainer(accelerator="gpu", precision="16-mixed")
        trainer = Trainer(plugins=[MixedPrecision("16-mixed", "cuda", torch.amp.GradScaler(init_scale=1024))])
    """

    def __init__(self, precision: Literal["16-mixed", "bf16-mixed"], device: str,
                 scaler: torch.amp.GradScaler | None = None) -> None:
        if precision not in ("16-mixed", "bf16-mixed"):
            raise ValueError(
                f"Passed `MixedPrecision(precision={precision!r})`. Precision must be '16-mixed' or 'bf16-mixed'."
            )
        if scaler is None and precision == "16-mixed":
            scaler = torch.amp.GradScaler(device=device)
        if scaler is not None and precision == "bf16-mixed":
            raise MisconfigurationException(f"`precision='bf16-mixed'` does not use a scaler, found {scaler}.")
        self.precision = precision
        self.device = device
        self.scaler = scaler
        self._autocast_dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
        # ids of the optimizers whose gradients were unscaled since the last scaler update: a
        # `clip_gradients` call in manual optimization unscales early, and unscaling twice is an error
        self._unscaled: set[int] = set()

    def autocast_context_manager(self) -> torch.autocast:
        """The ``torch.autocast`` context every ``*_step`` runs in."""
        return torch.autocast(self.device, dtype=self._autocast_dtype)

    def forward_context(self) -> torch.autocast:
        return self.autocast_context_manager()

    def pre_backward(self, tensor: torch.Tensor, module: Any) -> torch.Tensor:
        if self.scaler is not None:
            return self.scaler.scale(tensor)
        return tensor

    def optimizer_step(
        self,
        optimizer: Optimizer,
        closure: Callable[[], Any],
        on_gradients_ready: Callable[[Optimizer], None],
        **kwargs: Any,
    ) -> Any:
        """Run the closure, unscale, call ``on_gradients_ready``, then let the scaler step (skipping the
        update when a gradient is not finite) and update its scale.

        Raises:
            MisconfigurationException: for ``LBFGS``, whose repeated closure calls the scaler cannot follow.
        """
        scaler = self.scaler
        optimizer = _unwrap(optimizer)
        if scaler is None:
            return super().optimizer_step(optimizer, closure, on_gradients_ready, **kwargs)
        if isinstance(optimizer, LBFGS):
            raise MisconfigurationException("AMP and the LBFGS optimizer are not compatible.")
        closure_result = closure()
        if closure_result is None and not _has_gradients(optimizer):
            # nothing was backpropagated (``training_step`` returned None): no unscaling, no update
            on_gradients_ready(optimizer)
            return None
        if not _optimizer_handles_unscaling(optimizer):
            self.unscale_gradients(optimizer)
        on_gradients_ready(optimizer)
        step_output = scaler.step(optimizer, **kwargs)  # skipped when a gradient is inf/NaN
        scaler.update()
        self._unscaled.clear()
        return step_output

    def unscale_gradients(self, optimizer: Optimizer) -> None:
        """Divide ``optimizer``'s gradients by the loss scale (once per step; later calls do nothing)."""
        optimizer = _unwrap(optimizer)
        if self.scaler is not None and id(optimizer) not in self._unscaled:
            self.scaler.unscale_(optimizer)
            self._unscaled.add(id(optimizer))

    def clip_gradients(self, optimizer: Optimizer, clip_val: float, gradient_clip_algorithm: str) -> None:
        """Clip the gradients, unscaling them first (in automatic optimization that already happened).

        Raises:
            RuntimeError: for an optimizer that unscales inside its own step (fused optimizers):
                its gradients are still scaled when clipping would run.
        """
        optimizer = _unwrap(optimizer)
        if clip_val > 0 and _optimizer_handles_unscaling(optimizer):
            raise RuntimeError(
                f"The current optimizer, {type(optimizer).__qualname__}, does not allow for gradient clipping"
                " because it performs unscaling of gradients internally. HINT: Are you using a 'fused' optimizer?"
            )
        if clip_val > 0:
            self.unscale_gradients(optimizer)
        super().clip_gradients(optimizer, clip_val, gradient_clip_algorithm)

    def state_dict(self) -> dict[str, Any]:
        if self.scaler is not None:
            return self.scaler.state_dict()
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.scaler is not None and state_dict:
            self.scaler.load_state_dict(state_dict)
