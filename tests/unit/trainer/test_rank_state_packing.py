"""The per-process resume state travels to global rank 0 as raw bytes: exact, and without ``torch.save``."""

from __future__ import annotations

import pickle
from collections import OrderedDict, namedtuple
from typing import Any

import pytest
import torch
from torch import Tensor

from torchbolt.trainer.resume import _map_tensors, _PackedTensor

Pair = namedtuple("Pair", "values name")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor):
        return type(b) is Tensor and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return type(a) is type(b) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def test_rank_state_round_trips_through_pickle_without_torch_save(monkeypatch: pytest.MonkeyPatch) -> None:
    state = {
        "rng": {"torch": torch.get_rng_state()},
        "grads": [torch.randn(3, 2).bfloat16(), torch.tensor(3.5), torch.empty(0, 4), torch.tensor([True, False])],
        "results": Pair(torch.arange(4), "loss"),
        "metric_states": OrderedDict(total=torch.ones(2, dtype=torch.complex64)),
        "epoch_log": (1, torch.zeros(1, dtype=torch.float64)),
        "loader_states": [{"position": 7}],
    }
    packed = _map_tensors(state, Tensor, _PackedTensor.pack)

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("torch.save was called while pickling the packed state")

    monkeypatch.setattr(torch, "save", forbidden)
    payload = pickle.dumps(packed)
    monkeypatch.undo()
    restored = _map_tensors(pickle.loads(payload), _PackedTensor, _PackedTensor.unpack)
    assert _same(state, restored)


def test_a_parameter_is_left_to_pickle_as_before() -> None:
    parameter = torch.nn.Parameter(torch.ones(2))
    assert _map_tensors([parameter], Tensor, _PackedTensor.pack)[0] is parameter
