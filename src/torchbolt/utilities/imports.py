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


def _version_at_least(module: str, minimum: tuple[int, ...]) -> bool:
    """Whether the installed distribution ``module`` has a release number of at least ``minimum``."""
    import re
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = re.match(r"\d+(\.\d+)*", version(module))
    except PackageNotFoundError:
        return False
    return release is not None and tuple(int(part) for part in release.group().split(".")) >= minimum


# Lightning's environment flags, for code written against them; computed on first read so that
# `import torchbolt` stays free of these look-ups
_LIGHTNING_FLAGS = {
    "_OMEGACONF_AVAILABLE": lambda: module_available("omegaconf"),
    "_RICH_AVAILABLE": lambda: module_available("rich"),
    "_TORCHVISION_AVAILABLE": lambda: module_available("torchvision"),
    "_TORCH_GREATER_EQUAL_2_8": lambda: _version_at_least("torch", (2, 8)),
    "_TORCHMETRICS_GREATER_EQUAL_0_11": lambda: _version_at_least("torchmetrics", (0, 11)),
}


def __getattr__(name: str) -> bool:
    if name in _LIGHTNING_FLAGS:
        value = bool(_LIGHTNING_FLAGS[name]())
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
