"""Helpers for data under distributed strategies."""

from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader, DistributedSampler

from torchbolt.utilities.data import _dataloader_init_kwargs, _is_dataloader_shuffled


def _inject_distributed_sampler(loader: DataLoader, stage: str, sampler_kwargs: dict[str, Any]) -> DataLoader:
    """Rebuild ``loader`` with a ``DistributedSampler`` that keeps its shuffling."""
    if isinstance(loader.sampler, DistributedSampler):
        return loader
    shuffle = _is_dataloader_shuffled(loader) if stage == "train" else False
    sampler: DistributedSampler = DistributedSampler(loader.dataset, shuffle=shuffle, **sampler_kwargs)
    return type(loader)(**_dataloader_init_kwargs(loader, sampler))
