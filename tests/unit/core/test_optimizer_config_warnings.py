"""Warnings about ``configure_optimizers`` output that would silently do something else than intended."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.models import ClassifierModule
from torchbolt.core.optimizer import LRSchedulerConfig, _init_optimizers_and_lr_schedulers
from torchbolt.utilities.exceptions import MisconfigurationException


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


# ---------------------------------------------------------------------------------------------------- validation


class _Checkpointable:
    """A scheduler outside torch's class hierarchy that can be saved (``state_dict``/``load_state_dict``)."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def step(self, whatever: object) -> None:  # not torch's `step()` signature
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def test_a_scheduler_that_cannot_be_checkpointed_is_refused() -> None:
    class Bare:
        def __init__(self, optimizer: torch.optim.Optimizer) -> None:
            self.optimizer = optimizer

        def step(self) -> None:
            pass

    model = ClassifierModule()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="lr scheduler `Bare` is invalid.*state_dict"):
        _init_optimizers_and_lr_schedulers(model, {"optimizer": opt, "lr_scheduler": Bare(opt)})


def test_a_custom_scheduler_needs_lr_scheduler_step_only_under_automatic_optimization() -> None:
    model = ClassifierModule()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(MisconfigurationException, match="`_Checkpointable` doesn't follow PyTorch's LRScheduler"):
        _init_optimizers_and_lr_schedulers(model, ([opt], [_Checkpointable(opt)]))
    model.lr_scheduler_step = lambda scheduler, metric: scheduler.step(metric)  # type: ignore[method-assign]
    _, configs = _init_optimizers_and_lr_schedulers(model, ([opt], [_Checkpointable(opt)]))
    assert isinstance(configs[0].scheduler, _Checkpointable)
    manual = ClassifierModule()
    manual.automatic_optimization = False
    manual_opt = torch.optim.SGD(manual.parameters(), lr=0.1)
    _init_optimizers_and_lr_schedulers(manual, ([manual_opt], [_Checkpointable(manual_opt)]))


def test_manual_optimization_records_plateau_schedulers_without_a_monitor() -> None:
    model = ClassifierModule()
    model.automatic_optimization = False
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    _, configs = _init_optimizers_and_lr_schedulers(model, ([opt], [plateau]))
    assert configs[0].scheduler is plateau and configs[0].monitor is None
    as_dict = {"scheduler": plateau, "monitor": "loss", "interval": "step"}
    with pytest.warns(RuntimeWarning, match=r"\['monitor'\], but the keys will be ignored"):
        _, configs = _init_optimizers_and_lr_schedulers(model, ([opt], [as_dict]))
    assert configs[0].interval == "step" and configs[0].monitor is None


def test_reduce_on_plateau_key_marks_a_custom_plateau_scheduler() -> None:
    model = ClassifierModule()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    config = {"scheduler": _Checkpointable(opt), "reduce_on_plateau": True, "monitor": "loss"}
    model.lr_scheduler_step = lambda scheduler, metric: None  # type: ignore[method-assign]
    _, configs = _init_optimizers_and_lr_schedulers(model, {"optimizer": opt, "lr_scheduler": config})
    assert configs[0].reduce_on_plateau and configs[0].monitor == "loss"
    # which optimizer a scheduler belongs to is bookkeeping, not part of the config's value
    assert configs[0] == LRSchedulerConfig(config["scheduler"], reduce_on_plateau=True, monitor="loss")


def test_several_optimizers_or_optimizer_idx_under_automatic_optimization_raise_runtime_error() -> None:
    model = ClassifierModule()
    two = (torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(RuntimeError, match="multiple optimizers is only supported with manual optimization"):
        _init_optimizers_and_lr_schedulers(model, two)
    with pytest.raises(MisconfigurationException):  # what torchbolt raised before: still caught
        _init_optimizers_and_lr_schedulers(model, two)

    class OldStyle(ClassifierModule):
        def training_step(self, batch, batch_idx, optimizer_idx):  # type: ignore[override]
            return super().training_step(batch, batch_idx)

    with pytest.raises(RuntimeError, match="Remove the `optimizer_idx` argument from `training_step`"):
        _init_optimizers_and_lr_schedulers(OldStyle(), torch.optim.SGD(model.parameters(), lr=0.1))


def test_configure_optimizers_is_called_when_no_output_is_given() -> None:
    model = ClassifierModule()
    optimizers, _ = _init_optimizers_and_lr_schedulers(model)
    assert len(optimizers) == 1 and isinstance(optimizers[0], torch.optim.Optimizer)


def test_trainer_lightning_module_is_the_connected_one_before_any_run() -> None:
    import torchbolt as pl

    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    model = ClassifierModule()
    trainer.strategy.connect(model)
    assert trainer.lightning_module is model
