"""Out-of-memory recognition and the model/hparams/datamodule attribute helpers the tuners use."""

from __future__ import annotations

import pytest
import torch

import torchbolt as pl
from torchbolt.utilities.memory import is_oom_error
from torchbolt.utilities.parsing import lightning_getattr, lightning_hasattr, lightning_setattr


def test_real_cpu_allocation_failure_is_an_oom_error():
    with pytest.raises(RuntimeError) as info:
        torch.empty(1 << 50, dtype=torch.uint8)
    assert is_oom_error(info.value)


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("anything"),
    RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a non-contiguous"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to"),
])
def test_oom_messages_are_recognized(error):
    assert is_oom_error(error)


@pytest.mark.parametrize("error", [RuntimeError("shape mismatch"), ValueError("CUDA out of memory"), RuntimeError()])
def test_other_errors_are_not_oom(error):
    assert not is_oom_error(error)


class _Model(pl.LightningModule):
    def __init__(self, lr: float = 0.1):
        super().__init__()
        self.save_hyperparameters()
        self.lr = lr


def test_setattr_updates_the_attribute_and_hparams_together():
    model = _Model()
    assert lightning_hasattr(model, "lr")
    lightning_setattr(model, "lr", 0.5)
    assert model.lr == model.hparams.lr == 0.5


def test_datamodule_value_wins_when_reading():
    class DataModule(pl.LightningDataModule):
        batch_size = 64

    model = _Model()
    model.batch_size = 8
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.datamodule = DataModule()
    model.trainer = trainer
    assert lightning_getattr(model, "batch_size") == 64
    lightning_setattr(model, "batch_size", 16)
    assert model.batch_size == trainer.datamodule.batch_size == 16


def test_missing_attribute_raises():
    with pytest.raises(AttributeError, match="neither stored"):
        lightning_getattr(_Model(), "momentum")
    assert not lightning_hasattr(_Model(), "momentum")


def test_a_replaced_hparams_namespace_is_searched() -> None:
    class Settings:
        learning_rate = 0.25

        def __contains__(self, name: str) -> bool:
            return name == "learning_rate"

    class WithDict(pl.LightningModule):
        hparams = {"learning_rate": 0.5}  # type: ignore[assignment]

    class WithNamespace(pl.LightningModule):
        hparams = Settings()  # type: ignore[assignment]

    assert lightning_getattr(WithDict(), "learning_rate") == 0.5
    assert lightning_hasattr(WithNamespace(), "learning_rate")
    assert lightning_getattr(WithNamespace(), "learning_rate") == 0.25
    assert not lightning_hasattr(WithNamespace(), "momentum")
    model = WithDict()
    lightning_setattr(model, "learning_rate", 0.1)
    assert model.hparams["learning_rate"] == 0.1


def test_a_scripted_module_is_not_picklable() -> None:
    from torchbolt.utilities.parsing import is_picklable

    assert not is_picklable(torch.jit.script(torch.nn.Linear(2, 2)))
    assert is_picklable({"a": 1}) and not is_picklable(lambda: None)
