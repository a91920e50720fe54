"""Facts about batches and dataloaders: lengths, batch sizes, loader re-instantiation."""

from __future__ import annotations

import inspect
from collections.abc import Generator, Iterable, Mapping
from typing import Any

from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler, SequentialSampler

from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import WarningCache, rank_zero_warn

_BATCH_SIZE_WARNING = (
    "Trying to infer the `batch_size` from an ambiguous collection. The batch size we found is {}."
    " To avoid any miscalculations, use `self.log(..., batch_size=batch_size)`."
)


def _extract_batch_size(batch: Any) -> Generator[int, None, None]:
    if isinstance(batch, Tensor):
        if batch.ndim == 0:
            yield 1
        else:
            yield batch.size(0)
    elif isinstance(batch, (Iterable, Mapping)) and not isinstance(batch, str):
        if isinstance(batch, Mapping):
            batch = batch.values()
        for sample in batch:
            yield from _extract_batch_size(sample)
    elif hasattr(batch, "__dataclass_fields__"):
        for name in batch.__dataclass_fields__:
            yield from _extract_batch_size(getattr(batch, name))


def extract_batch_size(batch: Any) -> int:
    """The size of the first dimension of the first tensor found in ``batch``.

    Raises:
        MisconfigurationException: when no tensor is found; pass ``self.log(..., batch_size=N)``.
    """
    error_msg = (
        "We could not infer the batch_size from the batch. Either simplify its structure"
        " or provide the batch_size as `self.log(..., batch_size=batch_size)`."
    )
    batch_size = None
    try:
        for bs in _extract_batch_size(batch):
            if batch_size is None:
                batch_size = bs
            elif batch_size != bs:
                _warning_cache.warn(_BATCH_SIZE_WARNING.format(batch_size))
                break
    except RecursionError as e:
        raise MisconfigurationException(error_msg) from e
    if batch_size is None:
        raise MisconfigurationException(error_msg)
    return batch_size


_warning_cache = WarningCache()


def has_len(dataloader: object) -> bool:
    """Whether ``len(dataloader)`` is defined and finite (an ``IterableDataset`` without ``__len__`` is not)."""
    try:
        length = len(dataloader)  # type: ignore[arg-type]
    except (TypeError, NotImplementedError):
        return False
    if length == 0:
        rank_zero_warn(f"`{type(dataloader).__name__}` returned 0 length. Please make sure this was your intention.")
    return True


def sized_len(dataloader: object) -> int | None:
    """``len(dataloader)`` or ``None`` when it has no length."""
    try:
        return len(dataloader)  # type: ignore[arg-type]
    except (TypeError, NotImplementedError):
        return None


def _is_dataloader_shuffled(dataloader: object) -> bool:
    if not isinstance(dataloader, DataLoader):
        return False
    sampler = dataloader.sampler
    if isinstance(dataloader.batch_sampler, BatchSampler):
        sampler = dataloader.batch_sampler.sampler
    if isinstance(sampler, SequentialSampler):
        return False
    return isinstance(sampler, RandomSampler)


def _dataloader_init_kwargs(dataloader: DataLoader, sampler: Sampler | None = None,
                            **overrides: Any) -> dict[str, Any]:
    """The keyword arguments that rebuild ``dataloader``, with ``sampler`` replacing its sampler.

    Only the arguments ``DataLoader.__init__`` accepts are read back from the instance; a subclass
    with extra constructor arguments must store them as attributes of the same name.
    """
    params = inspect.signature(DataLoader.__init__).parameters
    kwargs: dict[str, Any] = {}
    for name in params:
        if name in ("self", "dataset") or name.startswith("_"):
            continue
        if hasattr(dataloader, name):
            kwargs[name] = getattr(dataloader, name)
    # `batch_sampler`, `sampler`, `shuffle`, `batch_size`, `drop_last` are mutually constrained
    for name in ("batch_sampler", "sampler", "shuffle"):
        kwargs.pop(name, None)
    if sampler is not None:
        kwargs["sampler"] = sampler
    elif isinstance(dataloader.batch_sampler, BatchSampler) and type(dataloader.batch_sampler) is BatchSampler:
        kwargs["sampler"] = dataloader.sampler
    else:
        kwargs["batch_sampler"] = dataloader.batch_sampler
        kwargs.pop("batch_size", None)
        kwargs.pop("drop_last", None)
    if dataloader.batch_size is None and "batch_sampler" not in kwargs:
        kwargs["batch_size"] = None
    kwargs["dataset"] = dataloader.dataset
    kwargs.update(overrides)
    return kwargs


def has_iterable_dataset(dataloader: object) -> bool:
    """Whether ``dataloader`` reads an ``IterableDataset`` (it has no sampler to shard or shuffle)."""
    from torch.utils.data import IterableDataset

    return isinstance(getattr(dataloader, "dataset", None), IterableDataset)


def has_len_all_ranks(
    dataloader: object, strategy: Any, allow_zero_length_dataloader_with_multiple_devices: bool = False
) -> bool:
    """Whether ``dataloader`` has a length, checked together with every rank of ``strategy``.

    Returns ``False`` when it has no ``__len__`` (an iterable dataset). Every rank must call this, since
    the lengths are summed across ranks: when all ranks have zero batches a warning says so; when only
    this rank has none, a ``RuntimeError`` is raised (the ranks would wait on each other) unless
    ``allow_zero_length_dataloader_with_multiple_devices=True``, which only warns.
    """
    import torch

    try:
        local_length = len(dataloader)  # type: ignore[arg-type]
    except (TypeError, NotImplementedError):
        return False
    device = getattr(strategy, "root_device", torch.device("cpu"))
    total = strategy.reduce(torch.tensor(local_length, device=device), reduce_op="sum")
    total_length = int(total.item()) if isinstance(total, Tensor) else int(total)
    name = type(dataloader).__name__
    if total_length == 0:
        rank_zero_warn(f"Total length of `{name}` across ranks is zero. Please make sure this was your intention.")
    elif local_length == 0:
        message = (
            f"`{name}` has zero length on this rank while other ranks have batches; the ranks would wait for"
            " each other."
        )
        if not allow_zero_length_dataloader_with_multiple_devices:
            raise RuntimeError(
                message + " Give every rank at least one batch, or pass"
                " `allow_zero_length_dataloader_with_multiple_devices=True`."
            )
        rank_zero_warn(message)
    _warn_if_iterable_with_len(dataloader)
    return True


def _warn_if_iterable_with_len(dataloader: object) -> None:
    """An ``IterableDataset`` with ``__len__``: the length is trusted, but each worker/device copy yields it all."""
    if has_iterable_dataset(dataloader):
        rank_zero_warn(
            "Your `IterableDataset` has `__len__` defined. With more than one worker or device, each copy yields"
            " the whole dataset unless you shard it yourself."
        )


def num_cpus_available() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, else the machine's count)."""
    import os

    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def suggested_max_num_workers(local_world_size: int) -> int:
    """A ``num_workers`` for each of ``local_world_size`` processes: the CPUs shared out, one left free, at least 1."""
    if local_world_size < 1:
        raise ValueError(f"`local_world_size` must be at least 1, got {local_world_size}")
    return max(1, num_cpus_available() // local_world_size - 1)
