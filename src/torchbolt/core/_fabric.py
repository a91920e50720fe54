"""A LightningModule driven by Lightning Fabric instead of a Trainer.

Lightning Fabric's ``fabric.setup(module, *optimizers)`` sets ``module._fabric`` (and
``module._fabric_optimizers``) on any module that has a ``_fabric`` attribute. A LightningModule then
routes the few calls that would otherwise need a Trainer to that object: ``self.log``/``self.log_dict``
(to ``fabric.log_dict``), ``self.logger(s)``, ``self.optimizers()``, ``manual_backward``/``backward``
(to ``fabric.backward``), ``clip_gradients`` (to ``fabric.clip_gradients``), and attribute reads on
``self.trainer`` (to the Fabric object). torchbolt never imports Fabric: these helpers only call the
methods named here, on whatever object was assigned.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from torch import Tensor


class _TrainerFabricShim:
    """What ``module.trainer`` returns under Fabric: attribute reads go to the Fabric object.

    A Trainer attribute that Fabric does not have (``current_epoch``, ``fit_loop``...) raises an
    ``AttributeError`` that says so, instead of a confusing error deep inside the module's code.
    """

    def __init__(self, fabric: Any) -> None:
        self._fabric = fabric

    def __getattr__(self, item: str) -> Any:
        try:
            return getattr(self._fabric, item)
        except AttributeError:
            raise AttributeError(
                f"Your LightningModule code tried to access `self.trainer.{item}` but this attribute is not available"
                " when using Fabric with a LightningModule: Fabric has no such attribute (it is a Trainer's)."
            ) from None


def log_dict_through_fabric(fabric: Any, dictionary: Mapping[str, Any], logger: bool | None) -> None:
    """Send ``dictionary`` to ``fabric.log_dict`` after checking each value is a number or a tensor.

    ``logger=False`` logs nothing (Fabric has no other destination, such as a progress bar).

    Raises:
        ValueError: for a nested dict, or a value that is neither a number nor a tensor.
    """
    if logger is False:
        return
    for name, value in dictionary.items():
        if isinstance(value, Mapping):
            raise ValueError(
                f"`self.log_dict({dict(dictionary)})` was called, but nested dictionaries cannot be logged"
                f" (key {name!r}). Flatten it, e.g. with keys like '{name}/sub'."
            )
        if not isinstance(value, (numbers.Number, Tensor)):
            raise ValueError(
                f"`self.log({name!r}, {value!r})` was called, but `{type(value).__name__}` values cannot be logged"
                " through Fabric: log a number or a tensor."
            )
    fabric.log_dict(metrics=dict(dictionary))


def clip_gradients_through_fabric(
    fabric: Any, module: Any, optimizer: Any, gradient_clip_val: float | None, gradient_clip_algorithm: Any
) -> None:
    """``fabric.clip_gradients`` by value (``algorithm="value"``) or else by norm, with ``gradient_clip_val``."""
    algorithm = str(getattr(gradient_clip_algorithm, "value", gradient_clip_algorithm) or "norm").lower()
    by_value = algorithm == "value"
    fabric.clip_gradients(
        module, optimizer,
        clip_val=gradient_clip_val if by_value else None,
        max_norm=None if by_value else gradient_clip_val,
    )
