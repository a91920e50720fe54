"""Lightning's ``loops.utilities`` path: the public loop helper ``check_finite_loss``."""

from __future__ import annotations

import torch
from torch import Tensor


def check_finite_loss(loss: Tensor | None) -> None:
    """Raise when ``loss`` holds NaN or infinity (``None``, a skipped batch, passes).

    Note that the check reads the loss on the host: on an accelerator it waits for the device.

    Raises:
        ValueError: naming the loss value, so a diverging run stops with the value that caused it.
    """
    if loss is not None and not bool(torch.isfinite(loss).all()):
        raise ValueError(f"The loss returned in `training_step` is {loss}: it is not finite (NaN or infinity).")


__all__ = ["check_finite_loss"]
