"""Where each stage's dataloaders come from, and how many batches of each a run uses."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from torch.utils.data import DataLoader, SequentialSampler

from torchbolt.core.datamodule import LightningDataModule
from torchbolt.core.module import LightningModule
from torchbolt.trainer.states import DataStage
from torchbolt.utilities.combined_loader import CombinedLoader
from torchbolt.utilities.data import _dataloader_init_kwargs, _is_dataloader_shuffled, sized_len
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.parsing import is_overridden
from torchbolt.utilities.rank_zero import PossibleUserWarning, rank_zero_warn
from torchbolt.utilities.seed import pl_worker_init_function

if TYPE_CHECKING:
    from torchbolt.strategies.strategy import Strategy
    from torchbolt.trainer.config import TrainerConfig
    from torchbolt.trainer.hooks import HookDispatcher

_STAGE_METHOD: dict[DataStage, str] = {"train": "train_dataloader", "val": "val_dataloader", "test": "test_dataloader",
                 "predict": "predict_dataloader"}


@dataclass
class DataSource:
    """The loaders passed to a Trainer method, else the datamodule's, else the module's ``*_dataloader``."""

    module: LightningModule | None = None
    datamodule: LightningDataModule | None = None
    explicit: dict[str, Any] = field(default_factory=dict)

    def is_defined(self, stage: DataStage) -> bool:
        if self.explicit.get(stage) is not None:
            return True
        method = _STAGE_METHOD[stage]
        if self.datamodule is not None and is_overridden(method, self.datamodule, LightningDataModule):
            return True
        return self.module is not None and is_overridden(method, self.module, LightningModule)

    def request(self, stage: DataStage, hooks: Any) -> Any:
        """Call the ``*_dataloader`` method (or return the loaders passed in)."""
        explicit = self.explicit.get(stage)
        if explicit is not None:
            return explicit
        method = _STAGE_METHOD[stage]
        if self.datamodule is not None and is_overridden(method, self.datamodule, LightningDataModule):
            return getattr(self.datamodule, method)()
        if self.module is not None and is_overridden(method, self.module, LightningModule):
            return hooks.module(method)
        return None


def _check_dataloaders(stage: DataStage, loaders: Any) -> None:
    def bad(obj: Any) -> bool:
        return not hasattr(obj, "__iter__") or isinstance(obj, (str, bytes))

    values = list(loaders.values()) if isinstance(loaders, Mapping) else (
        list(loaders) if isinstance(loaders, (list, tuple)) else [loaders])
    for value in values:
        if bad(value):
            raise MisconfigurationException(
                f"`{_STAGE_METHOD[stage]}` returned {type(value).__name__}, which is not iterable. Return a"
                " `DataLoader` (or a list/dict of them)."
            )


def num_batches(loader: Any, limit: int | float, stage: DataStage) -> int | float:
    """How many batches of ``loader`` a run uses given ``limit_<stage>_batches``.

    Raises:
        MisconfigurationException: a fraction of an iterable without length, or a fraction so small
            that no batch is left.
    """
    length = sized_len(loader)
    if length == 0:
        rank_zero_warn(
            f"Total length of `{type(loader).__name__}` across ranks is zero. Please make sure this was your"
            f" intention: `{_STAGE_METHOD[stage]}` yields no batch, so this loop runs nothing."
        )
    total: int | float = float("inf") if length is None else length
    arg = f"limit_{stage}_batches"
    if isinstance(limit, int):
        return min(total, limit)
    if total == float("inf"):
        if limit != 1.0:
            raise MisconfigurationException(
                f"When using an `IterableDataset` (or any iterable without `__len__`) for `{_STAGE_METHOD[stage]}`,"
                f" `Trainer({arg})` must be `1.0` or an int (a number of batches)."
            )
        return total
    count = int(total * limit)
    if count == 0 and limit > 0.0 and total > 0:
        raise MisconfigurationException(
            f"You requested to check {limit} of the `{_STAGE_METHOD[stage]}` but {limit} * {total} < 1. Please"
            f" increase the `{arg}` argument. Try at least `{arg}={1.0 / total}`"
        )
    return count


def _flatten_eval(loaders: Any) -> list[Any]:
    if loaders is None:
        return []
    if isinstance(loaders, CombinedLoader):
        return list(loaders.flattened)
    if isinstance(loaders, Mapping):
        return list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        return list(loaders)
    return [loaders]


class DataPreparer:
    """Prepares a run's loaders: worker seeding, distributed samplers, overfit mode, batch counts.

    Args:
        config: the run's settings (limits, overfit, distributed sampler).
        strategy: the run's strategy (samplers, device, batch-count agreement between ranks).
        hooks: calls the module's ``*_dataloader`` methods (with the hook name set).
    """

    def __init__(self, config: TrainerConfig, strategy: Strategy, hooks: HookDispatcher) -> None:
        self.config = config
        self.strategy = strategy
        self.hooks = hooks

    def _prepare(self, loader: Any, stage: DataStage) -> Any:
        if not isinstance(loader, DataLoader):
            return loader
        given = loader
        config, strategy = self.config, self.strategy
        if stage != "train" and _is_dataloader_shuffled(loader):
            rank_zero_warn(
                f"Your `{_STAGE_METHOD[stage]}`'s sampler has shuffling enabled, it is strongly recommended that"
                " you turn shuffling off for val/test dataloaders.",
                category=PossibleUserWarning,
            )
        if stage == "train" and config.overfit_batches > 0 and _is_dataloader_shuffled(loader):
            rank_zero_warn(
                "You requested to overfit but enabled training dataloader shuffling."
                " We are turning off the training dataloader shuffling for you."
            )
            sequential = SequentialSampler(loader.dataset)  # type: ignore[arg-type]
            loader = type(loader)(**_dataloader_init_kwargs(loader, sequential))
        sampler_kwargs = strategy.distributed_sampler_kwargs
        if sampler_kwargs is not None and config.use_distributed_sampler:
            from torchbolt.utilities.distributed import _inject_distributed_sampler

            loader = _inject_distributed_sampler(loader, stage, sampler_kwargs)
        if int(os.environ.get("PL_SEED_WORKERS", 0)) and loader.worker_init_fn is None and loader.num_workers > 0:
            loader.worker_init_fn = partial(pl_worker_init_function, rank=strategy.global_rank)
        if loader is not given and not loader.pin_memory and strategy.root_device.type == "cuda":
            loader.pin_memory = True  # a loader torchbolt re-creates pins batches: asynchronous copies to the GPU
        return strategy.process_dataloader(loader)

    def train_loader(self, source: DataSource) -> tuple[Any, int | float]:
        """The training iterable (a ``CombinedLoader`` for collections) and its number of batches."""
        raw = source.request("train", self.hooks)
        if raw is None:
            raise MisconfigurationException(
                "No `train_dataloader()` method defined and no training dataloader passed. Pass"
                " `trainer.fit(model, train_dataloaders=...)`, a datamodule, or implement `train_dataloader`."
            )
        _check_dataloaders("train", raw)
        if isinstance(raw, CombinedLoader):
            loader: Any = raw
            loader.flattened[:] = [self._prepare(dl, "train") for dl in loader.flattened]
        elif isinstance(raw, (Mapping, list, tuple)):
            prepared = {k: self._prepare(v, "train") for k, v in raw.items()} if isinstance(raw, Mapping) else [
                self._prepare(v, "train") for v in raw]
            loader = CombinedLoader(prepared, "max_size_cycle")
        else:
            loader = self._prepare(raw, "train")
        count = num_batches(loader, self.config.limit_train_batches, "train")
        # every rank must run the same number of batches, or a gradient all-reduce waits forever
        self.strategy.check_num_batches(count, "train")
        return self.strategy.even_batches(loader, count), count

    def eval_loaders(self, source: DataSource, stage: DataStage) -> tuple[list[Any], list[int | float]]:
        """The flattened loaders of ``stage`` ("val", "test", "predict") and their batch counts."""
        raw = source.request(stage, self.hooks)
        if raw is None:
            return [], []
        _check_dataloaders(stage, raw)
        loaders = [self._prepare(dl, stage) for dl in _flatten_eval(raw)]
        limit = getattr(self.config, f"limit_{stage}_batches")
        counts = [num_batches(dl, limit, stage) for dl in loaders]
        return loaders, counts
