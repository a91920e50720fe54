"""``LightningDataModule``: everything about a dataset's download, splits and loaders in one class."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable, Mapping, Sized
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

        Each dataset argument may be a dataset, a list of datasets or a dict of datasets; each loader is
        ``DataLoader(ds, batch_size=..., shuffle=..., num_workers=..., pin_memory=True)`` (an
        ``IterableDataset`` is never shuffled). ``batch_size`` and ``num_workers`` are also passed to the
        class's ``__init__`` when it takes parameters of those names (or ``**kwargs``); everything in
        ``datamodule_kwargs`` is passed to it as well.
        """

        def dataloader(ds: Dataset[Any], shuffle: bool = False) -> DataLoader[Any]:
            shuffle &= not isinstance(ds, IterableDataset)
            # pinned host memory makes the copy to an accelerator faster (Lightning's choice too)
            return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, pin_memory=True)

        def build(ds: Any, shuffle: bool = False) -> Any:
            if isinstance(ds, Mapping):
                return {key: dataloader(d, shuffle) for key, d in ds.items()}
            if isinstance(ds, (list, tuple)):
                return [dataloader(d, shuffle) for d in ds]
            return dataloader(ds, shuffle)

        datamodule = cls(**datamodule_kwargs, **_special_init_kwargs(cls, batch_size=batch_size,
                                                                     num_workers=num_workers))
        if train_dataset is not None:
            datamodule.train_dataloader = lambda: build(train_dataset, shuffle=True)  # type: ignore[method-assign]
        if val_dataset is not None:
            datamodule.val_dataloader = lambda: build(val_dataset)  # type: ignore[method-assign]
        if test_dataset is not None:
            datamodule.test_dataloader = lambda: build(test_dataset)  # type: ignore[method-assign]
        if predict_dataset is not None:
            datamodule.predict_dataloader = lambda: build(predict_dataset)  # type: ignore[method-assign]
        return datamodule

    def __str__(self) -> str:
        """One line per loader hook, with the size of each dataset it would load.

        ``{Train dataloader: size=64}`` for a sized dataset, ``size=NA`` for one without a length,
        ``1. size=16 ; 2. size=NA`` for a list or dict of loaders, and ``None`` when the hook is not
        implemented or fails (e.g. ``setup`` has not built the dataset yet). Calling this builds the
        loaders, so it runs whatever the loader hooks run.
        """
        lines = []
        for label, hook in (("Train dataloader", "train_dataloader"), ("Validation dataloader", "val_dataloader"),
                            ("Test dataloader", "test_dataloader"), ("Predict dataloader", "predict_dataloader")):
            try:
                described = _describe_loaders(getattr(self, hook)())
            except Exception:  # a hook that cannot build its loader yet is shown as "None"
                described = "None"
            lines.append(f"{{{label}: {described}}}")
        return os.linesep.join(lines)

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


def _special_init_kwargs(cls: type, **candidates: Any) -> dict[str, Any]:
    """The ``candidates`` that ``cls.__init__`` accepts by name (all of them when it takes ``**kwargs``)."""
    params = inspect.signature(cls).parameters  # the __init__ parameters after `self`
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return candidates
    return {key: value for key, value in candidates.items() if key in params}


def _describe_loaders(loaders: Any) -> str:
    """``size=N`` (or ``size=NA``) for one loader; ``1. size=N ; 2. ...`` for a list/tuple/dict of them."""

    def size(loader: Any) -> str:
        dataset = getattr(loader, "dataset", None)
        return f"size={len(dataset)}" if isinstance(dataset, Sized) else "size=NA"

    if isinstance(loaders, Mapping):
        loaders = list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        return " ; ".join(f"{i}. {size(loader)}" for i, loader in enumerate(loaders, start=1))
    return size(loaders)
