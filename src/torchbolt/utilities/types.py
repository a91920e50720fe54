"""Type aliases Lightning users annotate their hooks with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict, Union

from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from torchbolt.core.optimizer import LRSchedulerConfig

STEP_OUTPUT = Union[Tensor, Mapping[str, Any], None]
TRAIN_DATALOADERS = Any
EVAL_DATALOADERS = Any
LRSchedulerTypeUnion = Any
OptimizerLRScheduler = Union[
    Optimizer,
    Sequence[Optimizer],
    tuple[Sequence[Optimizer], Sequence[Any]],
    Mapping[str, Any],
    Sequence[Mapping[str, Any]],
    None,
]


class LRSchedulerConfigType(TypedDict, total=False):
    """The keys of a scheduler dict in ``configure_optimizers``'s return value (all optional but ``scheduler``)."""

    scheduler: Any
    name: str | None
    interval: str
    frequency: int
    reduce_on_plateau: bool
    monitor: str | None
    strict: bool


class OptimizerConfig(TypedDict):
    """``configure_optimizers`` returning ``{"optimizer": ...}``."""

    optimizer: Optimizer


class OptimizerLRSchedulerConfig(TypedDict, total=False):
    """``configure_optimizers`` returning ``{"optimizer": ..., "lr_scheduler": ..., "monitor": ...}``."""

    optimizer: Optimizer
    lr_scheduler: Any
    monitor: str


_EVALUATE_OUTPUT = list[Mapping[str, float]]
_PREDICT_OUTPUT = Union[list[Any], list[list[Any]]]

__all__ = [
    "EVAL_DATALOADERS",
    "STEP_OUTPUT",
    "TRAIN_DATALOADERS",
    "DataLoader",
    "DistributedDataParallel",
    "LRSchedulerConfig",
    "LRSchedulerConfigType",
    "LRSchedulerTypeUnion",
    "OptimizerConfig",
    "OptimizerLRScheduler",
    "OptimizerLRSchedulerConfig",
]
