"""Optional dependencies: whether they are installed, and a clear error when they are needed."""

from __future__ import annotations

import importlib.util
from functools import lru_cache


@lru_cache
def module_available(name: str) -> bool:
    """Whether ``import name`` would succeed, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _require(module: str, extra: str, feature: str) -> None:
    """Raise a ``ModuleNotFoundError`` naming the extra to install when ``module`` is missing."""
    if not module_available(module):
        raise ModuleNotFoundError(
            f"{feature} requires `{module}`, which is not installed. Install it with"
            f" `pip install 'torchbolt[{extra}]'` (or `pip install {module}`)."
        )
