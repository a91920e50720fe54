"""Gradient norms for logging (``self.log_dict(grad_norm(self, norm_type=2))``)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import Module


def grad_norm(module: Module, norm_type: float | int | str, group_separator: str = "/") -> dict[str, Tensor]:
    """The norm of each parameter's gradient and of all of them together.

    Args:
        module: the module whose parameters' gradients are measured.
        norm_type: the p of the p-norm (``2``, ``"inf"``, ...).
        group_separator: separates the ``grad_{norm_type}_norm`` group from the parameter name.

    Returns:
        ``{"grad_2.0_norm/<param>": norm, ..., "grad_2.0_norm_total": total}`` as tensors (no host sync).

    Example::

        def on_before_optimizer_step(self, optimizer):
            self.log_dict(grad_norm(self.layer, norm_type=2))
    """
    norm_type = float(norm_type)
    if norm_type <= 0:
        raise ValueError(f"`norm_type` must be a positive number or 'inf' (infinity norm). Got {norm_type}")
    norms = {
        f"grad_{norm_type}_norm{group_separator}{name}": p.grad.data.norm(norm_type)
        for name, p in module.named_parameters()
        if p.grad is not None
    }
    if norms:
        norms[f"grad_{norm_type}_norm_total"] = torch.stack(list(norms.values())).norm(norm_type)
    return norms
