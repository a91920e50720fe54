"""How the Trainer loads, reloads, reshapes and iterates dataloaders (Lightning 2.x semantics)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, RandomSampler, SequentialSampler

import torchbolt as pl
from tests.helpers.models import ClassifierModule, classification_data, loader, quiet_trainer
from torchbolt.utilities import CombinedLoader
from torchbolt.utilities.exceptions import MisconfigurationException


class _EpochRecordingSampler(RandomSampler):
    """A random sampler that records every ``set_epoch`` it receives."""

    def __init__(self, data_source: Any) -> None:
        super().__init__(data_source)
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


# ---------------------------------------------------------------- reload_dataloaders_every_n_epochs


@pytest.mark.parametrize(
    ("sanity_steps", "every_n_epochs", "reload_every", "train_loads", "val_loads"),
    [
        # validation every epoch: loaded for the first epoch (by the sanity check when there is one)
        (0, 1, 1, [0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]),
        (1, 1, 2, [0, 2, 4], [2, 4]),
        # epoch 0 does not validate: the val loaders are first loaded in the first epoch that does
        (0, 2, 1, [0, 1, 2, 3, 4, 5], [1, 3, 5]),
        # a sanity check outside a validation epoch does not count as the load the interval starts from
        (1, 2, 2, [0, 2, 4], [1, 3, 5]),
        (1, 3, 4, [0, 4], [2]),
        (0, 3, 2, [0, 2, 4], [2, 5]),
    ],
)
def test_loaders_are_reloaded_in_the_epochs_that_need_them(
    sanity_steps: int, every_n_epochs: int, reload_every: int, train_loads: list[int], val_loads: list[int]
) -> None:
    train_epochs: list[int] = []
    val_epochs: list[int] = []

    class Recording(ClassifierModule):
        def train_dataloader(self) -> DataLoader:
            train_epochs.append(self.current_epoch)
            return loader(16)

        def val_dataloader(self) -> DataLoader:
            if not self.trainer.sanity_checking:
                val_epochs.append(self.current_epoch)
            return loader(16)

    quiet_trainer(max_epochs=6, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=sanity_steps,
                  check_val_every_n_epoch=every_n_epochs, reload_dataloaders_every_n_epochs=reload_every,
                  ).fit(Recording())
    assert train_epochs == train_loads
    assert val_epochs == val_loads


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize(("value", "shown"), [(True, True), (1, True), (False, False), (0, False), (3, 3)])
def test_fast_dev_run_reads_back_as_lightning_shows_it(value: int | bool, shown: int | bool) -> None:
    trainer = pl.Trainer(fast_dev_run=value, logger=False)
    assert trainer.fast_dev_run is shown if isinstance(shown, bool) else trainer.fast_dev_run == shown


def test_a_whole_number_float_limit_is_a_number_of_batches() -> None:
    trainer = quiet_trainer(limit_train_batches=3.0, limit_val_batches=1e50, num_sanity_val_steps=0)
    assert trainer.limit_train_batches == 3 and isinstance(trainer.limit_train_batches, int)
    trainer.fit(ClassifierModule())
    assert trainer.num_training_batches == 3
    assert trainer.num_val_batches == [4]  # every batch of the 32-sample loader


def test_a_fractional_float_limit_above_one_is_rejected() -> None:
    with pytest.raises(MisconfigurationException, match="limit_test_batches=1.5"):
        pl.Trainer(limit_test_batches=1.5)


def test_a_fraction_of_an_epoch_needs_epochs() -> None:
    with pytest.raises(MisconfigurationException, match="check_val_every_n_epoch=None"):
        pl.Trainer(val_check_interval=0.5, check_val_every_n_epoch=None)
    pl.Trainer(val_check_interval=5, check_val_every_n_epoch=None, logger=False)  # batches are fine


# ---------------------------------------------------------------- several training loaders


@pytest.mark.parametrize(("mode", "batches"), [("min_size", 2), ("max_size_cycle", 8), ("max_size", 8)])
def test_nested_train_loaders_come_back_in_their_structure(mode: str, batches: int) -> None:
    shapes: list[tuple[str, ...]] = []

    class Nested(ClassifierModule):
        def train_dataloader(self) -> CombinedLoader:
            return CombinedLoader({"pair": [loader(64), loader(16)], "single": loader(16)}, mode)  # type: ignore[arg-type]

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            shapes.append((*sorted(batch), str(len(batch["pair"]))))
            return super().training_step(batch["pair"][0], batch_idx)

    trainer = quiet_trainer(limit_val_batches=0)
    trainer.fit(Nested())
    assert trainer.num_training_batches == batches
    assert set(shapes) == {("pair", "single", "2")}  # the batch has the structure of the loaders
    shown = trainer.train_dataloader
    assert isinstance(shown, dict) and isinstance(shown["pair"], list) and isinstance(shown["single"], DataLoader)


def test_training_refuses_loaders_run_one_after_the_other() -> None:
    class Sequential(ClassifierModule):
        def train_dataloader(self) -> CombinedLoader:
            return CombinedLoader([loader(64), loader(16)], "sequential")

    trainer = quiet_trainer(limit_val_batches=0)
    with pytest.raises(ValueError, match='does not support the `CombinedLoader\\(mode="sequential"\\)`'):
        trainer.fit(Sequential())
    assert trainer.num_training_batches == 10  # counted before the refusal


def test_overfitting_makes_every_train_and_val_loader_sequential() -> None:
    class Shuffled(ClassifierModule):
        def train_dataloader(self) -> list[DataLoader]:
            return [loader(64, shuffle=True), loader(64, shuffle=True)]

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return super().training_step(batch[0], batch_idx)

        def val_dataloader(self) -> DataLoader:
            return loader(32, shuffle=True)

    trainer = quiet_trainer(overfit_batches=2)
    with pytest.warns(UserWarning, match="requested to overfit but enabled train dataloader shuffling"), \
            pytest.warns(UserWarning, match="requested to overfit but enabled val dataloader shuffling"):
        trainer.fit(Shuffled())
    assert all(isinstance(dl.sampler, SequentialSampler) for dl in trainer.train_dataloader)
    assert isinstance(trainer.val_dataloaders.sampler, SequentialSampler)


def test_an_iterable_dataset_with_a_length_is_flagged() -> None:
    data = classification_data(32)

    class WithLength(IterableDataset):
        def __iter__(self) -> Any:
            return iter(data)

        def __len__(self) -> int:
            return len(data)

    with pytest.warns(UserWarning, match="Your `IterableDataset` has `__len__` defined"):
        quiet_trainer().validate(ClassifierModule(), DataLoader(WithLength(), batch_size=8), verbose=False)


# ---------------------------------------------------------------- samplers' epochs


def test_samplers_learn_the_epoch_once_per_loop_run() -> None:
    dataset = classification_data(16)
    train_sampler, val_sampler = _EpochRecordingSampler(dataset), _EpochRecordingSampler(dataset)
    trainer = quiet_trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=1)
    with pytest.warns(UserWarning, match="shuffling enabled"):
        trainer.fit(ClassifierModule(), DataLoader(dataset, sampler=train_sampler),
                    DataLoader(dataset, sampler=val_sampler))
    assert train_sampler.epochs == [0, 1]
    assert val_sampler.epochs == [0, 0, 1]  # sanity check, then each epoch's validation

    after = _EpochRecordingSampler(dataset)
    with pytest.warns(UserWarning, match="shuffling enabled"):
        trainer.validate(ClassifierModule(), DataLoader(dataset, sampler=after), verbose=False)
    assert after.epochs == [2]  # a later run sees the epoch the fit reached


def test_overfitting_leaves_an_iterable_dataset_as_it_is() -> None:
    data = classification_data(32)

    class Stream(IterableDataset):
        def __iter__(self) -> Any:
            return iter(data)

    class Streaming(ClassifierModule):
        def train_dataloader(self) -> DataLoader:
            return DataLoader(Stream(), batch_size=8)

    trainer = quiet_trainer(overfit_batches=2, limit_val_batches=0)
    trainer.fit(Streaming())
    assert trainer.global_step == 2 and isinstance(trainer.train_dataloader.dataset, Stream)
