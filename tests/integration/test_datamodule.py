"""LightningDataModule: lifecycle, loaders, hyperparameters and state."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

import torchbolt as pl
from tests.helpers.loggers import RecordingLogger
from tests.helpers.models import ClassifierModule, classification_data, quiet_trainer


class Lifecycle(pl.LightningDataModule):
    def __init__(self, batch_size: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.calls: list[str] = []

    def prepare_data(self) -> None:
        self.calls.append("prepare_data")

    def setup(self, stage: str) -> None:
        self.calls.append(f"setup:{stage}")
        self.data = classification_data()

    def teardown(self, stage: str) -> None:
        self.calls.append(f"teardown:{stage}")

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=16)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=16)

    def state_dict(self) -> dict[str, Any]:
        return {"seen": len(self.calls)}


def test_lifecycle_per_stage() -> None:
    dm = Lifecycle()
    trainer = quiet_trainer()
    model = ClassifierModule()
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    assert dm.calls == ["prepare_data", "setup:fit", "teardown:fit", "prepare_data", "setup:test", "teardown:test"]
    assert dm.trainer is trainer and trainer.datamodule is dm


def test_test_after_fit_reuses_the_fitted_datamodule() -> None:
    dm = Lifecycle()
    trainer = quiet_trainer()
    model = ClassifierModule()
    trainer.fit(model, datamodule=dm)
    # with the model passed: without one, Lightning loads ckpt_path="best", which needs a ModelCheckpoint
    results = trainer.test(model)
    assert "test_loss" in results[0]


def test_datamodule_as_second_positional_argument_of_fit() -> None:
    trainer = quiet_trainer()
    trainer.fit(ClassifierModule(), Lifecycle())
    assert trainer.global_step == 8


def test_hyperparameters_of_module_and_datamodule_are_merged_for_loggers() -> None:
    logger = RecordingLogger()
    quiet_trainer(logger=logger, limit_train_batches=1, limit_val_batches=0).fit(
        ClassifierModule(lr=0.2), datamodule=Lifecycle(batch_size=4))
    assert logger.hparams == [{"batch_size": 4, "lr": 0.2, "features": 8}]


def test_from_datasets_builds_shuffled_train_and_ordered_eval_loaders() -> None:
    data = classification_data()
    dm = pl.LightningDataModule.from_datasets(train_dataset=data, val_dataset=data, test_dataset=[data, data],
                                              batch_size=16)
    assert isinstance(dm.train_dataloader().sampler, RandomSampler)
    assert isinstance(dm.val_dataloader().sampler, SequentialSampler)
    assert len(dm.test_dataloader()) == 2
    trainer = quiet_trainer()
    trainer.fit(ClassifierModule(), datamodule=dm)
    assert trainer.global_step == 4


def test_datamodule_state_and_hyperparameters_are_in_checkpoints(tmp_path: Any) -> None:
    dm = Lifecycle(batch_size=4)
    trainer = quiet_trainer(limit_train_batches=1, limit_val_batches=0)
    trainer.fit(ClassifierModule(), datamodule=dm)
    trainer.save_checkpoint(tmp_path / "dm.ckpt")
    checkpoint = torch.load(tmp_path / "dm.ckpt", weights_only=True)
    assert checkpoint["datamodule_hyper_parameters"] == {"batch_size": 4}
    assert checkpoint["Lifecycle"] == {"seen": 3}  # prepare_data, setup:fit, teardown:fit


def test_prepare_data_per_node_false_still_runs_once_on_one_process() -> None:
    dm = Lifecycle()
    dm.prepare_data_per_node = False
    quiet_trainer(limit_train_batches=1, limit_val_batches=0).fit(ClassifierModule(), datamodule=dm)
    assert dm.calls.count("prepare_data") == 1
