"""Strategies: how training is laid out over devices and processes.

The parallel strategies are imported on first use, so ``import torchbolt`` does not load
``torch.distributed`` machinery it may never need.
"""

from typing import Any

from torchbolt.strategies.single_device import SingleDeviceStrategy
from torchbolt.strategies.strategy import Strategy

_LAZY = {
    "ParallelStrategy": "torchbolt.strategies.parallel",
    "DDPStrategy": "torchbolt.strategies.ddp",
    "FSDPStrategy": "torchbolt.strategies.fsdp",
    "DeepSpeedStrategy": "torchbolt.strategies.deepspeed",
    "DataParallelStrategy": "torchbolt.strategies.dp",
    "ModelParallelStrategy": "torchbolt.strategies.model_parallel",
}

__all__ = ["DDPStrategy", "DataParallelStrategy", "DeepSpeedStrategy", "FSDPStrategy", "ModelParallelStrategy",
           "ParallelStrategy", "SingleDeviceStrategy", "Strategy", "StrategyRegistry"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "StrategyRegistry":
        from torchbolt.strategies.registry import StrategyRegistry, import_strategy_modules

        import_strategy_modules()
        return StrategyRegistry
    raise AttributeError(f"module 'torchbolt.strategies' has no attribute {name!r}")
