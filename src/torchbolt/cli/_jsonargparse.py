"""The one place that imports ``jsonargparse`` (the ``[cli]`` extra), so its absence is handled once.

``import torchbolt`` never reaches this module; ``import torchbolt.cli`` does, and works without
``jsonargparse`` installed: the error comes when a parser or a ``LightningCLI`` is built.
"""

from __future__ import annotations

import contextlib
from typing import Any


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


try:
    import jsonargparse as _jap
except ImportError:  # the [cli] extra is not installed
    _jap = None  # type: ignore[assignment]

JSONARGPARSE_AVAILABLE: bool = _jap is not None

if _jap is not None:
    import torch
    from jsonargparse import ActionConfigFile, ArgumentParser, Namespace, class_from_function

    # torch's C-extension callables (e.g. in type hints) cannot be resolved back to an import path
    _jap.register_unresolvable_import_paths(torch)
    # configs may live on any filesystem fsspec knows (s3://, memory://, ...), as checkpoints can
    with contextlib.suppress(AttributeError, ImportError, ValueError):  # older jsonargparse, or no fsspec support
        _jap.set_parsing_settings(config_read_mode_fsspec_enabled=True)
    # ``skip_none`` was renamed ``skip_unset`` in jsonargparse 4.49 (the methods' signatures hide it)
    _SKIP_KEY = "skip_unset" if _version_tuple(getattr(_jap, "__version__", "0")) >= (4, 49) else "skip_none"
else:
    ArgumentParser = object  # type: ignore[assignment,misc]
    Namespace = dict  # type: ignore[assignment,misc]
    ActionConfigFile = None  # type: ignore[assignment,misc]
    class_from_function = None  # type: ignore[assignment]
    _SKIP_KEY = "skip_none"

INSTALL_HINT = "pip install 'torchbolt[cli]'"


def require_jsonargparse(feature: str) -> None:
    """Raise a ``ModuleNotFoundError`` that names the extra to install when ``jsonargparse`` is missing."""
    if not JSONARGPARSE_AVAILABLE:
        raise ModuleNotFoundError(
            f"{feature} requires `jsonargparse`, which is not installed. Install it with `{INSTALL_HINT}`"
            " (or `pip install 'jsonargparse[signatures]'`)."
        )


def instantiate(parser: Any, config: Any) -> Any:
    """``parser.instantiate(config)``; jsonargparse before 4.49 calls it ``instantiate_classes``."""
    method = getattr(parser, "instantiate", None) or parser.instantiate_classes
    return method(config)


def keep_nulls() -> dict[str, Any]:
    """Keyword arguments for ``dump``/``save`` that keep ``null`` entries, whatever the jsonargparse version."""
    return {_SKIP_KEY: False}


__all__ = [
    "INSTALL_HINT",
    "JSONARGPARSE_AVAILABLE",
    "ActionConfigFile",
    "ArgumentParser",
    "Namespace",
    "class_from_function",
    "instantiate",
    "keep_nulls",
    "require_jsonargparse",
]
