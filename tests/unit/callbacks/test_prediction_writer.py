"""``BasePredictionWriter``: per-batch and per-epoch writes with the dataset indices of each batch."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.callbacks import BasePredictionWriter
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.utilities.exceptions import MisconfigurationException


class Recorder(BasePredictionWriter):
    def __init__(self, write_interval: Any) -> None:
        super().__init__(write_interval)
        self.batches: list[tuple[list[int], int, int]] = []
        self.epochs: list[tuple[Any, Any]] = []

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any, batch: Any,
                           batch_idx: int, dataloader_idx: int) -> None:
        self.batches.append((list(batch_indices), batch_idx, dataloader_idx))

    def write_on_epoch_end(self, trainer: Any, pl_module: Any, predictions: Any, batch_indices: Any) -> None:
        self.epochs.append((predictions, batch_indices))


class IndexModel(BoringModel):
    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        return batch[0]


def predict(writer: Recorder, loaders: Any, **kwargs: Any) -> Any:
    trainer = pl.Trainer(callbacks=[writer], logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False)
    return trainer.predict(IndexModel(), dataloaders=loaders, **kwargs)


def shuffled_loader(n: int = 10, **kwargs: Any) -> DataLoader:
    return DataLoader(TensorDataset(torch.arange(n)), batch_size=4, shuffle=True,
                      generator=torch.Generator().manual_seed(0), **kwargs)


def test_batch_writes_receive_the_dataset_indices_of_each_batch() -> None:
    writer = Recorder("batch")
    predict(writer, shuffled_loader(), return_predictions=False)
    assert [b[1:] for b in writer.batches] == [(0, 0), (1, 0), (2, 0)]
    assert sorted(i for indices, _, _ in writer.batches for i in indices) == list(range(10))
    assert writer.epochs == []


def test_batch_indices_match_the_samples_with_two_workers() -> None:
    writer = Recorder("batch_and_epoch")
    predict(writer, shuffled_loader(num_workers=2), return_predictions=False)
    predictions, indices = writer.epochs[0]
    for prediction, batch_indices in zip(predictions, indices[0]):
        assert prediction.tolist() == batch_indices  # the data are the indices themselves


def test_epoch_write_receives_all_predictions_and_indices_even_without_returning_them() -> None:
    writer = Recorder("epoch")
    assert predict(writer, shuffled_loader(), return_predictions=False) is None
    predictions, indices = writer.epochs[0]
    assert len(predictions) == 3 and len(indices) == 1 and len(indices[0]) == 3
    assert writer.batches == []


def test_several_dataloaders_keep_their_indices_apart() -> None:
    writer = Recorder("batch_and_epoch")
    predict(writer, [shuffled_loader(6), shuffled_loader(3)])
    assert [(b, d) for _, b, d in writer.batches] == [(0, 0), (1, 0), (0, 1)]
    _, indices = writer.epochs[0]
    assert [len(per_loader) for per_loader in indices] == [2, 1]


def test_an_unknown_write_interval_raises() -> None:
    with pytest.raises(MisconfigurationException, match="`write_interval` should be one of"):
        Recorder("step")


class Counting(torch.utils.data.IterableDataset):
    def __iter__(self) -> Any:
        return iter([(torch.tensor(float(i)),) for i in range(5)])


def test_an_iterable_dataset_is_predicted_with_empty_batch_indices() -> None:
    import warnings

    writer = Recorder("batch")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Couldn't infer the batch indices")
        predictions = predict(writer, DataLoader(Counting(), batch_size=2))
    assert [p.tolist() for p in predictions] == [[0.0, 1.0], [2.0, 3.0], [4.0]]
    assert writer.batches == [([], 0, 0), ([], 1, 0), ([], 2, 0)]


def test_spawned_processes_do_not_return_predictions(tmp_path: Any) -> None:
    from torchbolt.trainer.eval_loop import _resolve_return_predictions

    trainer = pl.Trainer(strategy="ddp_spawn", devices=2, accelerator="cpu", logger=False, max_epochs=1)
    assert _resolve_return_predictions(None, trainer.strategy) is False
    assert _resolve_return_predictions(False, trainer.strategy) is False
    with pytest.raises(MisconfigurationException, match="`return_predictions` should be set to `False`"):
        _resolve_return_predictions(True, trainer.strategy)
    assert _resolve_return_predictions(None, pl.Trainer(logger=False, max_epochs=1).strategy) is True


def test_predict_step_returning_none_warns_once_per_call() -> None:
    class Sometimes(IndexModel):
        def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
            return None if batch_idx % 2 else batch[0]

    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    for _ in range(2):
        with pytest.warns(UserWarning, match="predict returned None") as record:
            trainer.predict(Sometimes(), dataloaders=DataLoader(TensorDataset(torch.arange(12)), batch_size=2))
        assert sum("predict returned None" in str(w.message) for w in record) == 1
