"""``precision="64-true"``: parameters, inputs and new tensors in float64."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from torchbolt.plugins.precision.precision import Precision
from torchbolt.plugins.precision.utils import _DtypeContextManager, convert_floating_point


class DoublePrecision(Precision):
    """Train in double precision (``torch.float64``).

    The module is cast with ``.double()``, floating-point inputs are cast to float64 before the
    batch hooks see them, and inside every ``*_step`` the default dtype is float64 so tensors the
    step creates match. Useful for numerically delicate models and gradient checks; about twice
    the memory and much slower than fp32. Not available on MPS (no float64 there).

    Example::

        trainer = Trainer(precision="64-true")   # or Trainer(plugins=[DoublePrecision()])
    """

    precision = "64-true"

    def convert_module(self, module: nn.Module) -> nn.Module:
        return module.double()

    def convert_input(self, data: Any) -> Any:
        return convert_floating_point(data, torch.float64)

    def tensor_init_context(self) -> AbstractContextManager[Any]:
        return _DtypeContextManager(torch.float64)

    def forward_context(self) -> AbstractContextManager[Any]:
        return _DtypeContextManager(torch.float64)


class LightningDoublePrecisionModule(nn.Module):
    """Wraps a LightningModule so that floating-point inputs of ``forward`` and the ``*_step`` methods are float64.

    :class:`DoublePrecision` already converts batches before they reach the module; this wrapper is for
    code that calls a module directly with float32 data. Parameters are not converted here (call
    ``module.double()``).

    Args:
        pl_module: the module to wrap (available as ``.module``).
    """

    def __init__(self, pl_module: nn.Module) -> None:
        super().__init__()
        self.module = pl_module

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        args = convert_floating_point(args, torch.float64)
        kwargs = convert_floating_point(kwargs, torch.float64)
        return getattr(self.module, name)(*args, **kwargs)

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("training_step", *args, **kwargs)

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("validation_step", *args, **kwargs)

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("test_step", *args, **kwargs)

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("predict_step", *args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("forward", *args, **kwargs)
