"""Strategy names accepted by ``Trainer(strategy="...")`` and how each is built."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchbolt.strategies.strategy import Strategy

# name -> factory(**init_kwargs) building the strategy; parallel strategies register themselves here
StrategyRegistry: dict[str, dict[str, Any]] = {}


def register_strategy(name: str, factory: Callable[..., Strategy], description: str = "",
                      **init_kwargs: Any) -> None:
    """Make ``Trainer(strategy=name)`` build ``factory(**init_kwargs)``."""
    StrategyRegistry[name] = {"factory": factory, "description": description, "init_params": init_kwargs}


def available_strategies() -> list[str]:
    return sorted(StrategyRegistry)


def import_strategy_modules() -> None:
    """Import the parallel strategies' modules, which register their names (idempotent)."""
    # parallel strategies register their names when their module is imported
    import importlib

    for module in ("torchbolt.strategies.ddp", "torchbolt.strategies.fsdp", "torchbolt.strategies.deepspeed",
                   "torchbolt.strategies.dp", "torchbolt.strategies.model_parallel"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
