"""Helpers for copying modules that may be attached to a running Trainer."""

from __future__ import annotations

import copy
from collections.abc import Generator
from contextlib import contextmanager
from typing import Any, TypeVar

from torch import nn

M = TypeVar("M", bound=nn.Module)


def _trainer_refs(module: nn.Module) -> dict[int, Any]:
    refs: dict[int, Any] = {}
    for child in module.modules():
        trainer = child.__dict__.get("_trainer")
        if trainer is not None:
            refs[id(trainer)] = trainer
    return refs


def deepcopy_without_trainer(module: M) -> M:
    """``copy.deepcopy(module)`` whose copy is not attached to a Trainer.

    A LightningModule keeps a reference to its Trainer; a plain ``deepcopy`` would copy the whole
    Trainer (loggers, dataloaders, other callbacks) along with the weights.
    """
    # a deepcopy memo entry makes every reference to that object copy as the given value (here None)
    memo: dict[int, Any] = dict.fromkeys(_trainer_refs(module))
    return copy.deepcopy(module, memo)


@contextmanager
def trainer_detached(module: nn.Module) -> Generator[None, None, None]:
    """Within the block, ``module`` (and its LightningModule children) hold no Trainer reference.

    For code that deep-copies the module itself, such as ``torch.optim.swa_utils.AveragedModel``.
    """
    saved = [(child, child.__dict__["_trainer"]) for child in module.modules() if "_trainer" in child.__dict__]
    for child, _ in saved:
        child.__dict__["_trainer"] = None
    try:
        yield
    finally:
        for child, trainer in saved:
            child.__dict__["_trainer"] = trainer
