"""The ``Precision`` plug-in interface; the base class is plain fp32 and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

_PRECISION_INPUT_STR = Literal[
    "64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "transformer-engine",
    "transformer-engine-float16",
]

# one shared no-op context: entering it costs two trivial calls, where a `@contextmanager`
# generator would be built and driven for every batch
_NO_OP_CONTEXT: AbstractContextManager[Any] = nullcontext()


class Precision:
    """How tensors are cast and how backward/step are wrapped for a numeric precision.

    The base class is ``"32-true"``: every method is the identity or the plain PyTorch call.
    Subclasses (``DoublePrecision``, ``MixedPrecision``, ``HalfPrecision``, ...) override only what
    differs. A plug-in never holds a reference to the Trainer; what it needs comes as arguments.

    The Trainer calls, in this order: :meth:`module_init_context` around ``configure_model``;
    :meth:`convert_module` once in setup; per batch :meth:`convert_input` (before the batch
    hooks and the device transfer), :meth:`forward_context` around every ``*_step``,
    :meth:`pre_backward` / :meth:`backward` / :meth:`post_backward`, and on a step batch
    :meth:`optimizer_step`, which must call ``on_gradients_ready`` (hooks, clipping) on the final,
    unscaled gradients before the update. :meth:`state_dict` is saved in checkpoints under the
    class name and given back to :meth:`load_state_dict` on resume.
    """

    precision: str = "32-true"

    def convert_module(self, module: nn.Module) -> nn.Module:
        """Cast the module's parameters where the precision requires it (e.g. ``.double()``)."""
        return module

    def convert_input(self, data: Any) -> Any:
        """Cast floating-point inputs of a batch where needed."""
        return data

    def convert_output(self, data: Any) -> Any:
        """Cast outputs back to the default dtype where needed."""
        return data

    def forward_context(self) -> AbstractContextManager[Any]:
        """Entered around every ``*_step`` call (autocast for mixed precision)."""
        return _NO_OP_CONTEXT

    def tensor_init_context(self) -> AbstractContextManager[Any]:
        """Entered where tensors are created for the run (default dtype for the true precisions)."""
        return _NO_OP_CONTEXT

    def module_init_context(self) -> AbstractContextManager[Any]:
        """Entered around ``configure_model`` and ``Trainer.init_module`` (default dtype, layer replacement)."""
        return self.tensor_init_context()

    def pre_backward(self, tensor: Tensor, module: nn.Module | None) -> Tensor:
        """Transform the loss before backward (loss scaling)."""
        return tensor

    def backward(self, tensor: Tensor, model: Any, optimizer: Optimizer | None, *args: Any, **kwargs: Any) -> None:
        """Run the backward pass through the module's ``backward`` hook."""
        model.backward(tensor, *args, **kwargs)

    def post_backward(self, tensor: Tensor, module: nn.Module | None) -> Tensor:
        return tensor

    def optimizer_step(
        self,
        optimizer: Optimizer,
        closure: Callable[[], Any],
        on_gradients_ready: Callable[[Optimizer], None],
        **kwargs: Any,
    ) -> Any:
        """Step ``optimizer``; ``closure`` computes loss and gradients, then ``on_gradients_ready``
        (hooks and clipping) runs on the final, unscaled gradients before the update."""

        def closure_then_hooks() -> Any:
            result = closure()
            on_gradients_ready(optimizer)
            return result

        return optimizer.step(closure=closure_then_hooks, **kwargs)

    def unscale_gradients(self, optimizer: Optimizer) -> None:
        """Undo loss scaling on ``optimizer``'s gradients (no-op without a scaler)."""

    def clip_gradients(self, optimizer: Optimizer, clip_val: float, gradient_clip_algorithm: str) -> None:
        """Clip the gradients of ``optimizer``'s parameters by ``"norm"`` (L2) or ``"value"``."""
        if clip_val <= 0:
            return
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, clip_value=clip_val)
        else:
            from torchbolt.utilities.grads import clip_grad_norm

            clip_grad_norm(params, max_norm=clip_val)  # torch's, extended to DTensors on several meshes

    def state_dict(self) -> dict[str, Any]:
        """State to save in checkpoints (the gradient scaler's)."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass

    def teardown(self) -> None:
        pass
