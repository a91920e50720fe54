"""Gradient norms: for logging (``self.log_dict(grad_norm(self, norm_type=2))``) and for clipping."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

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


def clip_grad_norm(parameters: Iterable[Tensor], max_norm: float, norm_type: float = 2.0) -> Tensor:
    """``torch.nn.utils.clip_grad_norm_`` that also accepts gradients that are DTensors on different device
    meshes (tensor-parallel layers next to layers sharded only with FSDP2), which torch's own cannot combine.

    Each mesh's gradients are reduced to one norm over all ranks, the norms are combined into the total
    norm of the whole model, and every gradient is scaled by the same factor. Returns the total norm.
    """
    parameters = list(parameters)
    params = [p for p in parameters if p.grad is not None]
    dtensor_module = sys.modules.get("torch.distributed.tensor")  # no DTensor exists unless it was imported
    if dtensor_module is None:
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm=max_norm, norm_type=norm_type)
    dtensor_type = dtensor_module.DTensor
    groups: dict[Any, list[Tensor]] = {}
    for p in params:
        grad = p.grad
        groups.setdefault(grad.device_mesh if isinstance(grad, dtensor_type) else None, []).append(p)
    if len(groups) <= 1:
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm=max_norm, norm_type=norm_type)
    norms = []
    for mesh, group in groups.items():
        norm: Any = torch.nn.utils.get_total_norm([p.grad for p in group if p.grad is not None], norm_type)
        norms.append(norm.full_tensor() if mesh is not None else norm)  # a DTensor: reduced over its mesh
    device = norms[0].device
    total = torch.nn.utils.get_total_norm([n.to(device) for n in norms], norm_type)
    for mesh, group in groups.items():
        group_total = total
        if mesh is not None:
            replicate = dtensor_module.Replicate()
            group_total = dtensor_type.from_local(total.to(group[0].device), mesh, [replicate] * mesh.ndim)
        torch.nn.utils.clip_grads_with_norm_(group, max_norm, group_total)
    return total
