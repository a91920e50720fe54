"""Type aliases Lightning users annotate their hooks with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Union

from torch import Tensor
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
_EVALUATE_OUTPUT = list[Mapping[str, float]]
_PREDICT_OUTPUT = Union[list[Any], list[list[Any]]]

__all__ = [
    "EVAL_DATALOADERS",
    "STEP_OUTPUT",
    "TRAIN_DATALOADERS",
    "DataLoader",
    "LRSchedulerConfig",
    "LRSchedulerTypeUnion",
    "OptimizerLRScheduler",
]
