"""Bad input gets a clear error, before training starts where possible, naming the argument and the fix."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import torchbolt as pl
from tests.helpers.models import ClassifierModule, Counting, loader, quiet_trainer
from torchbolt.demos.boring_classes import BoringDataModule
from torchbolt.utilities.exceptions import MisconfigurationException


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_epochs": -2}, r"Trainer\(max_epochs=-2\).*int >= -1"),
        ({"max_steps": -5}, r"max_steps=-5"),
        ({"limit_train_batches": 1.5}, r"limit_train_batches=1.5.*\[0.0, 1.0\]"),
        ({"limit_val_batches": -1}, r"limit_val_batches=-1"),
        ({"limit_test_batches": "all"}, r"limit_test_batches='all'"),
        ({"precision": "fp17"}, r"precision='fp17'.*not supported.*32-true"),
        ({"accumulate_grad_batches": 0}, r"accumulate_grad_batches=0"),
        ({"val_check_interval": 1.5}, r"val_check_interval=1.5"),
        ({"check_val_every_n_epoch": 0}, r"check_val_every_n_epoch=0"),
        ({"num_sanity_val_steps": -3}, r"num_sanity_val_steps=-3"),
        ({"gradient_clip_val": -1.0}, r"gradient_clip_val=-1.0"),
        ({"gradient_clip_algorithm": "l3"}, r"gradient_clip_algorithm='l3'.*'norm' or 'value'"),
        ({"deterministic": "yes"}, r"deterministic='yes'"),
        ({"fast_dev_run": -1}, r"fast_dev_run=-1"),
        ({"max_time": "1 hour"}, r"DD:HH:MM:SS"),
        ({"num_nodes": 0}, r"num_nodes=0"),
        ({"devices": 0}, r"devices=0"),
        ({"strategy": "warp_drive"}, r"strategy='warp_drive'.*not a known strategy"),
        ({"accelerator": "quantum"}, r"accelerator='quantum'.*not supported"),
        ({"callbacks": [object()]}, r"not a `torchbolt.Callback`"),
        ({"logger": "tensorboard"}, r"logger='tensorboard'"),
        ({"plugins": [object()]}, r"plugins=.*Precision, CheckpointIO or ClusterEnvironment"),
        ({"profiler": 3}, r"profiler=3"),
        ({"enable_checkpointing": "yes"}, r"enable_checkpointing='yes'"),
        ({"default_root_dir": 3}, r"default_root_dir=3"),
        ({"sync_batchnorm": "no"}, r"sync_batchnorm='no'"),
    ],
)
@pytest.mark.filterwarnings("ignore:`max_epochs` was not set")
def test_invalid_trainer_argument_is_rejected_at_construction(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(MisconfigurationException, match=match):
        pl.Trainer(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when no GPU exists")
def test_gpu_accelerator_without_gpu_names_the_fix() -> None:
    with pytest.raises(MisconfigurationException, match=r"accelerator='gpu'.*no GPU is available.*accelerator='cpu'"):
        pl.Trainer(accelerator="gpu")


def test_unknown_argument_suggests_the_closest_name() -> None:
    with pytest.raises(TypeError, match=r"max_epoch.*Did you mean `max_epochs`"):
        pl.Trainer(max_epoch=3)


def test_missing_training_step_fails_before_any_hook_runs() -> None:
    counting = Counting()

    class NoStep(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(8, 2)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with pytest.raises(MisconfigurationException, match=r"No `training_step\(\)` method defined"):
        quiet_trainer(callbacks=[counting]).fit(NoStep(), loader())
    assert counting.train_batches == []


def test_missing_configure_optimizers() -> None:
    class NoOptim(ClassifierModule):
        configure_optimizers = pl.LightningModule.configure_optimizers

    with pytest.raises(MisconfigurationException, match=r"No `configure_optimizers\(\)` method defined"):
        quiet_trainer().fit(NoOptim())


def test_missing_train_dataloader() -> None:
    class NoData(ClassifierModule):
        train_dataloader = pl.LightningModule.train_dataloader

    with pytest.raises(MisconfigurationException, match=r"No `train_dataloader\(\)` method defined.*train_dataloaders"):
        quiet_trainer().fit(NoData())


def test_datamodule_and_dataloaders_together_are_rejected() -> None:
    with pytest.raises(MisconfigurationException, match="not both"):
        quiet_trainer().fit(ClassifierModule(), train_dataloaders=loader(), datamodule=BoringDataModule())


def test_model_of_the_wrong_type() -> None:
    with pytest.raises(TypeError, match="must be a `LightningModule`"):
        quiet_trainer().fit(nn.Linear(2, 2))  # type: ignore[arg-type]


def test_dataloader_that_is_not_iterable() -> None:
    class BadLoader(ClassifierModule):
        def train_dataloader(self) -> Any:
            return 42

    with pytest.raises(MisconfigurationException, match="not iterable"):
        quiet_trainer().fit(BadLoader())


class ReturnsMatrix(ClassifierModule):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y, reduction="none")


def test_training_step_returning_a_non_scalar_tensor() -> None:
    with pytest.raises(MisconfigurationException, match=r"loss of shape \(8,\).*scalar.*loss.mean\(\)"):
        quiet_trainer().fit(ReturnsMatrix())


def test_training_step_returning_a_dict_without_loss() -> None:
    class NoLossKey(ClassifierModule):
        def training_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
            return {"lossy": super().training_step(batch, batch_idx)}

    with pytest.raises(MisconfigurationException, match="'loss' key needs to be present.*lossy"):
        quiet_trainer().fit(NoLossKey())


def test_training_step_returning_an_unsupported_type() -> None:
    class ReturnsFloat(ClassifierModule):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return 1.0

    with pytest.raises(MisconfigurationException, match="must return a Tensor.*got float"):
        quiet_trainer().fit(ReturnsFloat())


def test_training_step_returning_a_detached_loss() -> None:
    class Detached(ClassifierModule):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return super().training_step(batch, batch_idx).detach()

    with pytest.raises(MisconfigurationException, match="does not require grad"):
        quiet_trainer().fit(Detached())


def test_training_step_returning_none_skips_the_batch() -> None:
    class SkipOdd(ClassifierModule):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if batch_idx % 2:
                return None
            return super().training_step(batch, batch_idx)

    torch.manual_seed(0)
    skipping = SkipOdd()
    torch.manual_seed(0)
    reference = ClassifierModule()
    even_batches = [b for i, b in enumerate(loader()) if i % 2 == 0]
    from torchbolt.trainer.optimization import _Closure

    _Closure.warning_cache.clear()  # shown once per process: an earlier test in this worker may have seen it
    with pytest.warns(UserWarning, match="`training_step` returned `None`"):
        quiet_trainer(limit_val_batches=0).fit(skipping, loader())
    quiet_trainer(limit_val_batches=0).fit(reference, DataLoader(even_batches, batch_size=None))
    for a, b in zip(skipping.parameters(), reference.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ("high", ValueError, r"self.log\(metric, high\)` was called, but `str` values cannot be logged"),
        ([1.0, 2.0], ValueError, r"`list` values cannot be logged"),
        (torch.ones(3), ValueError, r"must have a single element.*tensor.mean\(\)"),
    ],
)
def test_logging_an_unsupported_value(value: Any, error: type[Exception], match: str) -> None:
    class BadLog(ClassifierModule):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.log("metric", value)
            return super().training_step(batch, batch_idx)

    with pytest.raises(error, match=match):
        quiet_trainer().fit(BadLog())


def test_eval_step_must_exist_for_validate_and_test() -> None:
    class NoEval(ClassifierModule):
        validation_step = pl.LightningModule.validation_step
        test_step = pl.LightningModule.test_step

    with pytest.raises(MisconfigurationException, match=r"No `validation_step\(\)` method defined"):
        quiet_trainer().validate(NoEval())
    with pytest.raises(MisconfigurationException, match=r"No `test_step\(\)` method defined"):
        quiet_trainer().test(NoEval())


def test_multiple_val_loaders_need_dataloader_idx_in_the_step() -> None:
    class TwoLoaders(ClassifierModule):
        def val_dataloader(self) -> Any:
            return [loader(16), loader(16)]

    # a RuntimeError, as in Lightning
    with pytest.raises(RuntimeError, match="multiple `val_dataloader`.*TwoLoaders.validation_step.*dataloader_idx=0"):
        quiet_trainer().validate(TwoLoaders())


def test_multiple_optimizers_need_manual_optimization() -> None:
    class TwoOptims(ClassifierModule):
        def configure_optimizers(self) -> Any:
            return [torch.optim.SGD(self.parameters(), lr=0.1), torch.optim.Adam(self.parameters())]

    with pytest.raises(MisconfigurationException, match="multiple optimizers is only supported with manual"):
        quiet_trainer().fit(TwoOptims())
