"""Map a ``Trainer(precision=...)`` string to its precision plug-in."""

from __future__ import annotations

from typing import Any

from torchbolt.plugins.precision.precision import Precision
from torchbolt.utilities.exceptions import MisconfigurationException


def precision_plugin_for(precision: str, device_type: str, strategy: Any = None) -> Precision:
    """The plug-in for the canonical ``precision`` string on a ``device_type`` ("cpu", "cuda", ...).

    Raises:
        MisconfigurationException: when the precision cannot run on that device, naming an alternative.
    """
    if precision == "32-true":
        return Precision()
    raise MisconfigurationException(
        f"`Trainer(precision={precision!r})` is not available in this build on {device_type!r};"
        " use `precision='32-true'`."
    )
