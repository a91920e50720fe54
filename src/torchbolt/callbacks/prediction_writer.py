"""``BasePredictionWriter``: write predictions out as they are made (per batch) or at the end (per epoch)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

from torch.utils.data import DataLoader, IterableDataset

from torchbolt.callbacks.callback import Callback
from torchbolt.utilities.data import _dataloader_init_kwargs
from torchbolt.utilities.exceptions import MisconfigurationException

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer



class WriteInterval(str, Enum):
    """When a :class:`BasePredictionWriter` writes."""

    BATCH = "batch"
    EPOCH = "epoch"
    BATCH_AND_EPOCH = "batch_and_epoch"

    @property
    def on_batch(self) -> bool:
        return self in (WriteInterval.BATCH, WriteInterval.BATCH_AND_EPOCH)

    @property
    def on_epoch(self) -> bool:
        return self in (WriteInterval.EPOCH, WriteInterval.BATCH_AND_EPOCH)


class BasePredictionWriter(Callback):
    """Subclass it and implement :meth:`write_on_batch_end` and/or :meth:`write_on_epoch_end`.

    ``batch_indices`` are the dataset indices of the samples in a batch (``None``-free lists), read
    from the loader's batch sampler, so each prediction can be matched with its input even when
    the loader shuffles or runs on several processes.

    Args:
        write_interval: ``"batch"``, ``"epoch"`` or ``"batch_and_epoch"``.

    Raises:
        MisconfigurationException: an unknown ``write_interval``.

    Example::

        class TorchWriter(BasePredictionWriter):
            def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                                   dataloader_idx):
                torch.save({"prediction": prediction, "indices": batch_indices}, f"pred_{batch_idx}.pt")

        trainer.predict(model, dataloaders=loader, return_predictions=False)
    """

    def __init__(self, write_interval: Literal["batch", "epoch", "batch_and_epoch"] = "batch") -> None:
        if write_interval not in [i.value for i in WriteInterval]:
            raise MisconfigurationException(
                f"`write_interval` should be one of {[i.value for i in WriteInterval]}, got {write_interval!r}.")
        self.interval = WriteInterval(write_interval)

    def write_on_batch_end(self, trainer: Trainer, pl_module: LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int, dataloader_idx: int
                           ) -> None:
        """Write one batch's predictions."""
        raise NotImplementedError()

    def write_on_epoch_end(self, trainer: Trainer, pl_module: LightningModule, predictions: Sequence[Any],
                           batch_indices: Sequence[Any]) -> None:
        """Write all predictions (``batch_indices``: per dataloader, per batch, the sample indices)."""
        raise NotImplementedError()

    def on_predict_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self.interval.on_batch:
            return
        indices = trainer.predict_loop.current_batch_indices
        self.write_on_batch_end(trainer, pl_module, outputs, indices, batch, batch_idx, dataloader_idx)

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.interval.on_epoch:
            return
        loop = trainer.predict_loop
        self.write_on_epoch_end(trainer, pl_module, loop.predictions, loop.epoch_batch_indices)


class _IndexBatchSamplerWrapper:
    """A batch sampler that remembers the indices of every batch it produced (for prediction writers)."""

    def __init__(self, batch_sampler: Any) -> None:
        self._batch_sampler = batch_sampler
        self.seen_batch_indices: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        self.seen_batch_indices = []
        for batch in self._batch_sampler:
            batch = list(batch)
            self.seen_batch_indices.append(batch)
            yield batch

    def __len__(self) -> int:
        return len(self._batch_sampler)

    def __getattr__(self, name: str) -> Any:  # sampler, batch_size, drop_last of the wrapped sampler
        return getattr(self.__dict__["_batch_sampler"], name)


def _with_batch_indices(loader: Any) -> Any:
    """``loader`` rebuilt so that the indices of each batch can be read back (a ``DataLoader`` with batching)."""
    if not isinstance(loader, DataLoader) or loader.batch_sampler is None or _has_no_indices(loader):
        return loader
    if isinstance(loader.batch_sampler, _IndexBatchSamplerWrapper):
        return loader
    kwargs = _dataloader_init_kwargs(loader)
    for name in ("sampler", "batch_size", "drop_last", "shuffle"):
        kwargs.pop(name, None)
    kwargs["batch_sampler"] = _IndexBatchSamplerWrapper(loader.batch_sampler)
    return type(loader)(**kwargs)


def _has_no_indices(loader: Any) -> bool:
    """An ``IterableDataset`` is read in its own order, not by index: its batches have no indices to report
    (the writer gets ``[]``), and a ``DataLoader`` over one refuses a ``batch_sampler``."""
    return isinstance(getattr(loader, "dataset", None), IterableDataset)


def _seen_batch_indices(loader: Any) -> list[list[int]] | None:
    sampler = getattr(loader, "batch_sampler", None)
    return sampler.seen_batch_indices if isinstance(sampler, _IndexBatchSamplerWrapper) else None
