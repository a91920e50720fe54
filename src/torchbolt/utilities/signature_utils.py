"""Questions about a hook's signature, asked once when a run is set up."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


def is_param_in_hook_signature(
    hook_fx: Callable[..., Any], param: str, explicit: bool = False, min_args: int | None = None
) -> bool:
    """Whether ``hook_fx`` can receive the argument ``param``.

    True when ``param`` is a named parameter; otherwise, unless ``explicit=True``, also when the hook takes
    ``*args`` or (with ``min_args`` given) at least ``min_args`` positional parameters, since the argument
    could then arrive positionally. ``hook_fx`` is usually a bound method, whose ``self`` is not counted.
    """
    try:
        parameters = inspect.signature(hook_fx).parameters
    except (TypeError, ValueError) as err:
        raise TypeError(f"`hook_fx` must be a callable with an inspectable signature, got {hook_fx!r}") from err
    if param in parameters:
        return True
    if explicit:
        return False
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters.values()):
        return True
    positional = [
        p for p in parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    return min_args is not None and len(positional) >= min_args


__all__ = ["is_param_in_hook_signature"]
