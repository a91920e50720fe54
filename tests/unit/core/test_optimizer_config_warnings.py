"""Warnings about ``configure_optimizers`` output that would silently do something else than intended."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.models import ClassifierModule
from torchbolt.core.optimizer import _init_optimizers_and_lr_schedulers


def _configure(conf):
    return _init_optimizers_and_lr_schedulers(ClassifierModule(), conf)


def test_unknown_keys_of_the_optimizer_dict_are_named() -> None:
    model = ClassifierModule()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(RuntimeWarning, match=r"unsupported keys in the optimizer configuration: \{'bar', 'foo'\}"):
        _configure({"optimizer": opt, "foo": 1, "bar": 2})


def test_unknown_keys_of_a_scheduler_dict_are_named() -> None:
    model = ClassifierModule()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1), "every": 3}
    with pytest.warns(RuntimeWarning, match=r"unsupported keys in the lr scheduler dict: \{'every'\}"):
        _configure({"optimizer": opt, "lr_scheduler": scheduler})


def test_one_cycle_stepped_per_epoch_is_questioned() -> None:
    model = ClassifierModule()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    one_cycle = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    with pytest.warns(RuntimeWarning, match="didn't mean 'interval': 'step'"):
        _configure({"optimizer": opt, "lr_scheduler": {"scheduler": one_cycle}})
