"""``str(datamodule)`` lists the loaders and dataset sizes; ``from_datasets`` builds loaders and the instance."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from torch.utils.data import DataLoader, IterableDataset

import torchbolt as pl
from torchbolt.demos.boring_classes import (
    BoringDataModule,
    BoringDataModuleNoLen,
    BoringModel,
    IterableBoringDataModule,
    RandomDataset,
)
from torchbolt.profilers import SimpleProfiler
from torchbolt.utilities.exceptions import MisconfigurationException


def _lines(*entries: str) -> str:
    return os.linesep.join(entries)


def test_str_shows_none_for_loaders_that_cannot_be_built_yet() -> None:
    dm = BoringDataModule()
    assert str(dm) == _lines("{Train dataloader: None}", "{Validation dataloader: None}",
                             "{Test dataloader: None}", "{Predict dataloader: None}")
    dm.setup("fit")
    assert str(dm) == _lines("{Train dataloader: size=64}", "{Validation dataloader: size=64}",
                             "{Test dataloader: None}", "{Predict dataloader: None}")


def test_str_marks_unsized_datasets_and_numbers_several_loaders() -> None:
    no_len = BoringDataModuleNoLen()
    no_len.setup("test")
    assert str(no_len).splitlines()[2] == "{Test dataloader: size=NA}"
    several = IterableBoringDataModule()
    several.setup("fit")
    assert str(several).splitlines()[:2] == ["{Train dataloader: 1. size=16 ; 2. size=NA}",
                                             "{Validation dataloader: 1. size=32 ; 2. size=NA}"]


def test_from_datasets_loaders() -> None:
    class Stream(IterableDataset):
        def __iter__(self):
            yield from RandomDataset(2, 4)

    train, val = RandomDataset(2, 8), [RandomDataset(2, 4), Stream()]
    dm = pl.LightningDataModule.from_datasets(train, val, batch_size=4, num_workers=0)
    loader = dm.train_dataloader()
    assert isinstance(loader, DataLoader) and loader.batch_size == 4 and loader.pin_memory
    assert type(loader.sampler).__name__ == "RandomSampler"  # training data is shuffled
    val_loaders = dm.val_dataloader()
    assert [type(v.sampler).__name__ for v in val_loaders] == ["SequentialSampler", "_InfiniteConstantSampler"]
    # a hook with no dataset is still "not implemented", under both exception types users catch
    with pytest.raises(MisconfigurationException, match="`test_dataloader` must be implemented"):
        dm.test_dataloader()
    with pytest.raises(NotImplementedError):
        dm.predict_dataloader()


def test_from_datasets_passes_batch_size_and_num_workers_to_init_when_it_takes_them() -> None:
    class Named(pl.LightningDataModule):
        def __init__(self, batch_size: int = 1) -> None:
            super().__init__()
            self.batch_size = batch_size

    assert Named.from_datasets(RandomDataset(2, 4), batch_size=3, num_workers=2).batch_size == 3

    class Extra(pl.LightningDataModule):
        def __init__(self, other: int, **kwargs: int) -> None:
            super().__init__()
            self.other, self.kwargs = other, kwargs

    dm = Extra.from_datasets(RandomDataset(2, 4), batch_size=5, num_workers=0, other=7)
    assert dm.other == 7 and dm.kwargs == {"batch_size": 5, "num_workers": 0}
    with pytest.raises(TypeError, match="other"):
        Extra.from_datasets(RandomDataset(2, 4))


def test_datamodule_hooks_are_timed_by_the_profiler(tmp_path: Path) -> None:
    class Stateful(BoringDataModule):
        def prepare_data(self) -> None:
            pass

        def state_dict(self) -> dict[str, int]:
            return {"seen": 1}

    def fit(dm: Stateful, ckpt_path: str | None = None) -> SimpleProfiler:
        trainer = pl.Trainer(default_root_dir=tmp_path, max_steps=1, limit_val_batches=0, profiler="simple",
                             logger=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(BoringModel(), datamodule=dm, ckpt_path=ckpt_path)
        assert isinstance(trainer.profiler, SimpleProfiler)
        return trainer.profiler

    dm = Stateful()
    first = fit(dm)
    for hook in ("prepare_data", "setup", "state_dict", "teardown"):
        assert len(first.recorded_durations[f"[LightningDataModule]Stateful.{hook}"]) == 1
    ckpt = next((tmp_path / "checkpoints").glob("*.ckpt"))
    resumed = fit(Stateful(), ckpt_path=str(ckpt))
    assert len(resumed.recorded_durations["[LightningDataModule]Stateful.load_state_dict"]) == 1
