"""Strategies: how training is laid out over devices and processes."""

from torchbolt.strategies.single_device import SingleDeviceStrategy
from torchbolt.strategies.strategy import Strategy

__all__ = ["SingleDeviceStrategy", "Strategy"]
