"""The samplers torchbolt injects: training keeps the loader's options, evaluation never repeats a sample."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, DistributedSampler, SequentialSampler, WeightedRandomSampler

from torchbolt.utilities.distributed import (
    DistributedSamplerWrapper,
    UnrepeatedDistributedSampler,
    _inject_distributed_sampler,
)


def _indices(loader: DataLoader) -> list[int]:
    return [int(i) for batch in loader for i in batch]


def test_training_loader_gets_a_shuffling_distributed_sampler_with_its_options() -> None:
    loader = DataLoader(list(range(10)), batch_size=3, shuffle=True, drop_last=True, num_workers=0)
    ranks = [_inject_distributed_sampler(loader, "train", {"num_replicas": 2, "rank": r}) for r in (0, 1)]
    for new in ranks:
        assert isinstance(new.sampler, DistributedSampler) and new.sampler.shuffle
        assert new.batch_size == 3 and new.drop_last
    assert not set(_indices(ranks[0])) & set(_indices(ranks[1]))


def test_evaluation_sampler_splits_without_padding() -> None:
    data = list(range(11))
    shares = [list(UnrepeatedDistributedSampler(data, num_replicas=3, rank=r, shuffle=False)) for r in range(3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    loader = DataLoader(data, batch_size=2)
    split = [_indices(_inject_distributed_sampler(loader, "val", {"num_replicas": 3, "rank": r})) for r in range(3)]
    assert sorted(i for share in split for i in share) == data


def test_a_custom_sampler_is_wrapped_and_split() -> None:
    weights = torch.ones(8)
    sampler = WeightedRandomSampler(weights, num_samples=8, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(list(range(8)), batch_size=2, sampler=sampler)
    new = [_inject_distributed_sampler(loader, "train", {"num_replicas": 2, "rank": r}) for r in (0, 1)]
    assert all(isinstance(n.sampler, DistributedSamplerWrapper) for n in new)
    assert [len(_indices(n)) for n in new] == [4, 4]


def test_an_existing_distributed_sampler_is_kept() -> None:
    data = list(range(6))
    loader = DataLoader(data, sampler=DistributedSampler(data, num_replicas=2, rank=1, shuffle=False))
    assert _inject_distributed_sampler(loader, "train", {"num_replicas": 2, "rank": 0}) is loader


def test_sequential_eval_loader_keeps_order_within_each_rank() -> None:
    loader = DataLoader(list(range(5)), batch_size=1, sampler=SequentialSampler(range(5)))
    new = _inject_distributed_sampler(loader, "test", {"num_replicas": 2, "rank": 0})
    assert _indices(new) == [0, 2, 4]
