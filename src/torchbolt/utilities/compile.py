"""Support for modules wrapped by ``torch.compile``."""

from __future__ import annotations

from typing import Any


def _unwrap_compiled(model: Any) -> Any:
    """The LightningModule inside a ``torch.compile`` wrapper."""
    return model._orig_mod
