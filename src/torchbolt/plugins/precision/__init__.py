"""Precision plug-ins, at ``torchbolt.plugins.precision``."""

from torchbolt.plugins.precision.precision import Precision

__all__ = ["Precision"]
