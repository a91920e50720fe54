"""Where each stage's dataloaders come from, and how many batches of each a run uses."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from torch.utils.data import DataLoader, IterableDataset, SequentialSampler

from torchbolt.core.datamodule import LightningDataModule
from torchbolt.core.module import LightningModule
from torchbolt.trainer.states import DataStage
from torchbolt.utilities.combined_loader import CombinedLoader
from torchbolt.utilities.data import (
    _dataloader_init_kwargs,
    _is_dataloader_shuffled,
    _warn_if_iterable_with_len,
    sized_len,
    suggested_max_num_workers,
)
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
    elif length is not None:
        _warn_if_iterable_with_len(loader)
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
    return list(CombinedLoader(loaders, "sequential").flattened)


def _samples_out_of_order(loader: Any) -> bool:
    """A ``DataLoader`` over a map-style dataset whose sampler is not sequential (an ``IterableDataset`` has
    no sampler to replace)."""
    return (isinstance(loader, DataLoader) and not isinstance(loader.dataset, IterableDataset)
            and not isinstance(loader.sampler, SequentialSampler))


def _check_workers(loader: Any, name: str, local_world_size: int, reload_every_n_epochs: int) -> None:
    """Warn, once per prepared ``DataLoader``, about worker settings that slow loading down (Lightning's checks).

    - workers started with ``spawn`` and not kept between epochs: each epoch pays their start-up again;
    - otherwise fewer than 2 workers while the CPUs (see ``num_cpus_available``) allow more;
    - ``persistent_workers`` with ``pin_memory`` while loaders are reloaded: unstable in PyTorch.
    """
    if not isinstance(loader, DataLoader):
        return
    workers = loader.num_workers
    context = loader.multiprocessing_context
    start_method = context.get_start_method() if context is not None else multiprocessing.get_start_method()
    if workers > 0 and start_method == "spawn" and not loader.persistent_workers:
        rank_zero_warn(
            f"Consider setting `persistent_workers=True` in '{name}': its workers are started with 'spawn', which"
            " is slow, and without it they are started again every epoch."
        )
    elif workers < 2:
        suggested = suggested_max_num_workers(local_world_size)
        if suggested > 1:
            rank_zero_warn(
                f"The '{name}' does not have many workers which may be a bottleneck: it has `num_workers={workers}`"
                f" while this machine's CPUs allow more. Consider `num_workers={suggested}` in the `DataLoader` to"
                " load batches in parallel with training.",
                category=PossibleUserWarning,
            )
    if loader.persistent_workers and loader.pin_memory and reload_every_n_epochs > 0:
        rank_zero_warn(
            "`DataLoader(pin_memory=True, persistent_workers=True)` together with"
            " `Trainer(reload_dataloaders_every_n_epochs > 0)` can be unstable in PyTorch"
            " (https://github.com/pytorch/pytorch/issues/91252). Set `pin_memory=False` in this case.",
            category=PossibleUserWarning,
        )


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

    def _prepare(self, loader: Any, stage: DataStage, overfit: bool = False) -> Any:
        if not isinstance(loader, DataLoader):
            return loader
        given = loader
        config, strategy = self.config, self.strategy
        if overfit and _samples_out_of_order(loader):
            # the same batches every epoch: that is what overfitting a few batches means
            sequential = SequentialSampler(loader.dataset)  # type: ignore[arg-type]
            loader = type(loader)(**_dataloader_init_kwargs(loader, sequential))
        if stage != "train" and _is_dataloader_shuffled(loader):
            rank_zero_warn(
                f"Your `{_STAGE_METHOD[stage]}`'s sampler has shuffling enabled, it is strongly recommended that"
                " you turn shuffling off for val/test dataloaders.",
                category=PossibleUserWarning,
            )
        sampler_kwargs = strategy.distributed_sampler_kwargs
        if sampler_kwargs is not None and config.use_distributed_sampler:
            from torchbolt.utilities.distributed import _inject_distributed_sampler

            loader = _inject_distributed_sampler(loader, stage, sampler_kwargs)
        if int(os.environ.get("PL_SEED_WORKERS", 0)) and loader.worker_init_fn is None and loader.num_workers > 0:
            loader.worker_init_fn = partial(pl_worker_init_function, rank=strategy.global_rank)
        if loader is not given and not loader.pin_memory and strategy.root_device.type == "cuda":
            loader.pin_memory = True  # a loader torchbolt re-creates pins batches: asynchronous copies to the GPU
        loader = strategy.process_dataloader(loader)
        _check_workers(loader, _STAGE_METHOD[stage], strategy.num_processes, config.reload_dataloaders_every_n_epochs)
        return loader

    def _overfit(self, stage: DataStage, loaders: list[Any]) -> bool:
        """Whether the ``overfit_batches`` of a fit replace the samplers of ``loaders`` by sequential ones
        (with a warning, once for all of them, when any of them samples otherwise)."""
        if self.config.overfit_batches <= 0 or stage not in ("train", "val"):
            return False
        if any(_samples_out_of_order(dl) for dl in loaders):
            rank_zero_warn(
                f"You requested to overfit but enabled {stage} dataloader shuffling (its sampler is not sequential)."
                f" We are turning off the {stage} dataloader shuffling for you, so that every epoch sees the same"
                " batches."
            )
        return True

    def train_loader(self, source: DataSource) -> tuple[Any, int | float]:
        """The training iterable (a ``CombinedLoader`` for collections) and its number of batches."""
        raw = source.request("train", self.hooks)
        if raw is None:
            raise MisconfigurationException(
                "No `train_dataloader()` method defined and no training dataloader passed. Pass"
                " `trainer.fit(model, train_dataloaders=...)`, a datamodule, or implement `train_dataloader`."
            )
        _check_dataloaders("train", raw)
        loader: Any
        if isinstance(raw, (CombinedLoader, Mapping, list, tuple)):
            # a collection (nested lists/dicts too) is iterated together, every loader restarting until the
            # longest is done, unless the CombinedLoader passed says otherwise
            loader = raw if isinstance(raw, CombinedLoader) else CombinedLoader(raw, "max_size_cycle")
            overfit = self._overfit("train", loader.flattened)
            loader.flattened = [self._prepare(dl, "train", overfit) for dl in loader.flattened]
        else:
            loader = self._prepare(raw, "train", self._overfit("train", [raw]))
        count = num_batches(loader, self.config.limit_train_batches, "train")
        # every rank must run the same number of batches, or a gradient all-reduce waits forever
        self.strategy.check_num_batches(count, "train")
        return self.strategy.even_batches(loader, count), count

    def eval_loaders(self, source: DataSource, stage: DataStage,
                     fitting: bool = False) -> tuple[list[Any], list[int | float]]:
        """The flattened loaders of ``stage`` ("val", "test", "predict") and their batch counts.

        A ``CombinedLoader`` in a mode other than ``"sequential"`` comes back as the only loader (its
        leaves prepared, its per-leaf limits set), with one batch count per leaf. ``fitting``: the
        validation of a fit, where ``overfit_batches`` applies.
        """
        raw = source.request(stage, self.hooks)
        if raw is None:
            return [], []
        _check_dataloaders(stage, raw)
        flat = _flatten_eval(raw)
        overfit = fitting and self._overfit(stage, flat)
        loaders = [self._prepare(dl, stage, overfit) for dl in flat]
        limit = getattr(self.config, f"limit_{stage}_batches")
        counts = [num_batches(dl, limit, stage) for dl in loaders]
        if isinstance(raw, CombinedLoader) and raw.mode != "sequential":
            # iterated together: one loader whose batches hold one batch of each (see `EvaluationLoop`)
            raw.flattened = loaders
            raw._limits = list(counts)
            return [raw], counts
        return loaders, counts
