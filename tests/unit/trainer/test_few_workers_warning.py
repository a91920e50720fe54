"""The warning that a ``DataLoader`` "does not have many workers" while the CPUs allow more."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from torch.utils.data import DataLoader

import torchbolt.utilities.data as data_utils
from tests.helpers.models import ClassifierModule, classification_data, loader, quiet_trainer
from torchbolt.trainer.data import _check_workers
from torchbolt.utilities.rank_zero import PossibleUserWarning

FEW = "does not have many workers"


def _messages(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record]


class _TwoValLoaders(ClassifierModule):
    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        pass


def test_warns_once_per_loader_when_cpus_allow_more(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_utils, "num_cpus_available", lambda: 8)
    with pytest.warns(PossibleUserWarning) as record:
        quiet_trainer(limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0).fit(
            _TwoValLoaders(), loader(16), [loader(16), loader(16)])
    few = [m for m in _messages(record) if FEW in m]
    assert sum("'train_dataloader'" in m for m in few) == 1
    assert sum("'val_dataloader'" in m for m in few) == 2  # one per loader
    assert all("num_workers=7" in m for m in few)  # 8 CPUs, one process: 8 // 1 - 1


def test_silent_when_one_worker_is_all_the_cpus_allow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_utils, "num_cpus_available", lambda: 2)  # suggestion: 2 // 1 - 1 = 1
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        quiet_trainer(limit_train_batches=1, limit_val_batches=0).fit(ClassifierModule(), loader(16))
    assert not [m for m in _messages(record) if FEW in m]


class _OneBatch:
    """An iterable that is not a ``DataLoader`` (it has no workers to count)."""

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        yield tuple(t[:2] for t in classification_data(4).tensors)


def test_silent_for_iterables_that_are_not_dataloaders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_utils, "num_cpus_available", lambda: 8)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        quiet_trainer().predict(ClassifierModule(), _OneBatch())
    assert not [m for m in _messages(record) if FEW in m]


def test_spawned_workers_get_the_persistent_workers_hint_instead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_utils, "num_cpus_available", lambda: 8)
    spawned = DataLoader(classification_data(8), num_workers=1, multiprocessing_context="spawn")
    with pytest.warns(UserWarning, match="persistent_workers=True") as record:
        _check_workers(spawned, "train_dataloader", 1, 0)
    assert not [m for m in _messages(record) if FEW in m]
    kept = DataLoader(classification_data(8), num_workers=1, multiprocessing_context="spawn",
                      persistent_workers=True)
    with pytest.warns(PossibleUserWarning, match=FEW):
        _check_workers(kept, "train_dataloader", 1, 0)


def test_more_processes_per_machine_share_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_utils, "num_cpus_available", lambda: 8)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _check_workers(DataLoader(classification_data(8)), "val_dataloader", 4, 0)  # 8 // 4 - 1 = 1
    assert not [m for m in _messages(record) if FEW in m]


def test_pin_memory_with_persistent_workers_and_reloading(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_utils, "num_cpus_available", lambda: 2)
    dl = DataLoader(classification_data(8), num_workers=1, persistent_workers=True, pin_memory=True)
    with pytest.warns(PossibleUserWarning, match="pin_memory=False"):
        _check_workers(dl, "train_dataloader", 1, 1)
