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


# Availability flags under the names Lightning's examples import (`if _TORCHVISION_AVAILABLE: import torchvision`);
# plain booleans, evaluated once at import.
_TORCHVISION_AVAILABLE: bool = module_available("torchvision")
_OMEGACONF_AVAILABLE: bool = module_available("omegaconf")
_RICH_AVAILABLE: bool = module_available("rich")
