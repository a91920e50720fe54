"""Find and restore parameters shared between modules (tied weights).

Moving a model to another device with some strategies, or rebuilding it, can untie parameters that were
one object (an embedding and an output layer sharing a matrix). ``find_shared_parameters`` names the ties
and ``set_shared_parameters`` puts them back.
"""

from __future__ import annotations

from torch import nn


def find_shared_parameters(module: nn.Module) -> list[list[str]]:
    """Groups of fully qualified parameter names that refer to the same tensor object.

    Only groups with two or more names are returned, each in ``named_parameters`` order.
    """
    by_id: dict[int, list[str]] = {}
    for prefix, child in module.named_modules(remove_duplicate=False):
        for name, parameter in child.named_parameters(recurse=False, remove_duplicate=False):
            full = f"{prefix}.{name}" if prefix else name
            names = by_id.setdefault(id(parameter), [])
            if full not in names:
                names.append(full)
    return [names for names in by_id.values() if len(names) > 1]


def _owner(module: nn.Module, path: str) -> tuple[nn.Module, str]:
    *parents, leaf = path.split(".")
    for part in parents:
        module = getattr(module, part)
    return module, leaf


def set_shared_parameters(module: nn.Module, shared_params: list[list[str]]) -> nn.Module:
    """Make every name in each group of ``shared_params`` refer to the first name's parameter again.

    ``shared_params`` is what ``find_shared_parameters`` returned (before the ties were lost). Returns
    ``module``, changed in place.
    """
    for group in shared_params:
        if not isinstance(group, (list, tuple)) or not group:
            raise ValueError(f"`shared_params` must be a list of non-empty lists of parameter names, got {group!r}")
        first_owner, first_leaf = _owner(module, group[0])
        source = getattr(first_owner, first_leaf)
        for path in group[1:]:
            owner, leaf = _owner(module, path)
            setattr(owner, leaf, source)
    return module


__all__ = ["find_shared_parameters", "set_shared_parameters"]
