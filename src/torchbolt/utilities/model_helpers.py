"""Helpers about model classes."""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from torchbolt.utilities.parsing import is_overridden


def get_torchvision_model(model_name: str, **kwargs: Any) -> nn.Module:
    """Build ``torchvision.models.<model_name>(**kwargs)``.

    torchvision is imported here, on use; a clear ``ModuleNotFoundError`` says how to install it.
    """
    try:
        models = importlib.import_module("torchvision.models")
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError("`get_torchvision_model` needs torchvision: `pip install torchvision`") from err
    builder = getattr(models, "get_model", None)
    if builder is not None:
        model: nn.Module = builder(model_name, **kwargs)
        return model
    if not hasattr(models, model_name):
        raise ValueError(f"torchvision has no model named {model_name!r}")
    model = getattr(models, model_name)(**kwargs)
    return model


__all__ = ["get_torchvision_model", "is_overridden"]
