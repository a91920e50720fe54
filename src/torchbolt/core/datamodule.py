"""``LightningDataModule``: everything about a dataset's download, splits and loaders in one class."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Union

from torch.utils.data import DataLoader, Dataset, IterableDataset

from torchbolt.core.hooks import DataHooks
from torchbolt.core.mixins.hparams_mixin import HyperparametersMixin

if TYPE_CHECKING:
    from torchbolt.trainer.trainer import Trainer

_PATH = Union[str, Path]


class LightningDataModule(DataHooks, HyperparametersMixin):
    """Groups ``prepare_data``, ``setup(stage)``, ``teardown(stage)`` and the four dataloaders.

    Example::

        class DigitsDataModule(LightningDataModule):
            def __init__(self, batch_size: int = 64):
                super().__init__()
                self.batch_size = batch_size

            def prepare_data(self):          # once per node: download, write to disk
                ...

            def setup(self, stage: str):     # on every process: build datasets
                if stage == "fit":
                    self.train_set, self.val_set = ...
                if stage == "test":
                    self.test_set = ...

            def train_dataloader(self):
                return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)
    """

    name: str | None = None
    CHECKPOINT_HYPER_PARAMS_KEY = "datamodule_hyper_parameters"
    CHECKPOINT_HYPER_PARAMS_NAME = "datamodule_hparams_name"
    CHECKPOINT_HYPER_PARAMS_TYPE = "datamodule_hparams_type"

    def __init__(self) -> None:
        super().__init__()
        self.trainer: Trainer | None = None

    @classmethod
    def from_datasets(
        cls,
        train_dataset: Dataset[Any] | Iterable[Dataset[Any]] | None = None,
        val_dataset: Dataset[Any] | Iterable[Dataset[Any]] | None = None,
        test_dataset: Dataset[Any] | Iterable[Dataset[Any]] | None = None,
        predict_dataset: Dataset[Any] | Iterable[Dataset[Any]] | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
        **datamodule_kwargs: Any,
    ) -> LightningDataModule:
        """A datamodule whose loaders wrap the given datasets (training loaders shuffle).

        Each argument may be a dataset, a list of datasets or a dict of datasets.
        """

        def dataloader(ds: Dataset[Any], shuffle: bool = False) -> DataLoader[Any]:
            shuffle &= not isinstance(ds, IterableDataset)
            return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                              pin_memory=False)

        def build(ds: Any, shuffle: bool = False) -> Any:
            if isinstance(ds, Mapping):
                return {key: dataloader(d, shuffle) for key, d in ds.items()}
            if isinstance(ds, (list, tuple)):
                return [dataloader(d, shuffle) for d in ds]
            return dataloader(ds, shuffle)

        datamodule = cls(**datamodule_kwargs)
        if train_dataset is not None:
            datamodule.train_dataloader = lambda: build(train_dataset, shuffle=True)  # type: ignore[method-assign]
        if val_dataset is not None:
            datamodule.val_dataloader = lambda: build(val_dataset)  # type: ignore[method-assign]
        if test_dataset is not None:
            datamodule.test_dataloader = lambda: build(test_dataset)  # type: ignore[method-assign]
        if predict_dataset is not None:
            datamodule.predict_dataloader = lambda: build(predict_dataset)  # type: ignore[method-assign]
        return datamodule

    def state_dict(self) -> dict[str, Any]:
        """Extra state to save in checkpoints (stored under the class's qualified name)."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def on_exception(self, exception: BaseException) -> None:
        """Called when a Trainer run raises, before teardown."""

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: _PATH | IO[bytes],
        map_location: Any = None,
        hparams_file: _PATH | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Build the datamodule from the ``datamodule_hyper_parameters`` saved in a checkpoint.

        Keyword arguments override the saved hyperparameters; ``weights_only`` is as in
        :meth:`LightningModule.load_from_checkpoint`.

        Example::

            dm = MyDataModule.load_from_checkpoint("checkpoints/last.ckpt")
        """
        from torchbolt.core.saving import _load_from_checkpoint

        return _load_from_checkpoint(cls, checkpoint_path, map_location, hparams_file, None, weights_only, **kwargs)
