"""Unit tests of the utilities users import directly."""

from __future__ import annotations

import os
import random
from collections import OrderedDict, namedtuple
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from torchbolt.utilities import (
    AttributeDict,
    CombinedLoader,
    apply_to_collection,
    grad_norm,
    move_data_to_device,
    rank_zero_only,
    seed_everything,
)
from torchbolt.utilities.data import extract_batch_size
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.model_summary import get_human_readable_count
from torchbolt.utilities.seed import isolate_rng

Pair = namedtuple("Pair", ["a", "b"])


@dataclass
class Batch:
    x: torch.Tensor
    label: str


def test_apply_to_collection_rebuilds_nested_structures() -> None:
    data = {"t": torch.ones(2), "l": [torch.zeros(1), 3], "n": Pair(torch.ones(1), "s"),
            "o": OrderedDict(k=torch.ones(1)), "d": Batch(torch.ones(1), "x")}
    out = apply_to_collection(data, torch.Tensor, lambda t: t * 2)
    assert torch.equal(out["t"], torch.full((2,), 2.0))
    assert out["l"][1] == 3 and torch.equal(out["l"][0], torch.zeros(1))
    assert isinstance(out["n"], Pair) and out["n"].b == "s" and out["n"].a.item() == 2
    assert isinstance(out["o"], OrderedDict)
    assert isinstance(out["d"], Batch) and out["d"].x.item() == 2 and data["d"].x.item() == 1


def test_move_data_to_device_handles_objects_with_to() -> None:
    class Custom:
        def __init__(self) -> None:
            self.moved_to: torch.device | None = None

        def to(self, device: torch.device) -> Custom:
            self.moved_to = device
            return self

    batch = {"x": torch.ones(1), "c": Custom(), "s": "keep"}
    out = move_data_to_device(batch, torch.device("cpu"))
    assert out["c"].moved_to == torch.device("cpu") and out["s"] == "keep"


def test_seed_everything_reproduces_every_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    def draw() -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    assert seed_everything(123) == 123
    first = draw()
    seed_everything(123)
    assert draw() == first
    assert os.environ["PL_GLOBAL_SEED"] == "123"
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    assert seed_everything() == 7


def test_seed_everything_workers_flag() -> None:
    seed_everything(1, workers=True)
    assert os.environ["PL_SEED_WORKERS"] == "1"


def test_isolate_rng_restores_the_state() -> None:
    torch.manual_seed(0)
    with isolate_rng():
        torch.rand(3)
        random.random()
    expected = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), expected)


def test_rank_zero_only_follows_the_rank() -> None:
    calls: list[int] = []

    @rank_zero_only
    def record() -> None:
        calls.append(1)

    record()
    rank_zero_only.rank = 1
    record()
    rank_zero_only.rank = 0
    assert calls == [1]


def test_attribute_dict() -> None:
    d = AttributeDict(lr=0.1)
    d.batch = 4
    assert d["batch"] == 4 and d.lr == 0.1
    with pytest.raises(AttributeError):
        _ = d.missing


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("max_size_cycle", [(0, 10), (1, 11), (2, 10)]),
        ("min_size", [(0, 10), (1, 11)]),
        ("max_size", [(0, 10), (1, 11), (2, None)]),
    ],
)
def test_combined_loader_modes(mode: str, expected: list[tuple[int, int | None]]) -> None:
    loader = CombinedLoader({"a": [0, 1, 2], "b": [10, 11]}, mode=mode)  # type: ignore[arg-type]
    assert [(batch["a"], batch["b"]) for batch in loader] == expected
    assert len(loader) == len(expected)


def test_combined_loader_sequential() -> None:
    loader = CombinedLoader([[1, 2], [3]], mode="sequential")
    assert list(loader) == [(1, 0, 0), (2, 1, 0), (3, 0, 1)]
    with pytest.raises(ValueError, match="mode"):
        CombinedLoader([], mode="zip")  # type: ignore[arg-type]


def test_several_train_dataloaders_are_combined() -> None:
    from tests.helpers.models import ClassifierModule, loader, quiet_trainer

    seen: list[set[str]] = []

    class Multi(ClassifierModule):
        def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            seen.append(set(batch))
            return super().training_step(batch["a"], batch_idx)

    trainer = quiet_trainer(limit_val_batches=0)
    trainer.fit(Multi(), {"a": loader(64), "b": loader(32)})
    assert trainer.global_step == 8 and seen[0] == {"a", "b"}
    # as in Lightning, the trainer shows the collection of loaders, not the object combining them
    assert isinstance(trainer.train_dataloader, dict) and set(trainer.train_dataloader) == {"a", "b"}


def test_extract_batch_size() -> None:
    assert extract_batch_size(torch.zeros(5, 3)) == 5
    assert extract_batch_size({"x": [torch.zeros(4, 1)], "s": "a"}) == 4
    with pytest.raises(MisconfigurationException, match="batch_size"):
        extract_batch_size({"s": "a"})


def test_grad_norm() -> None:
    layer = nn.Linear(2, 1, bias=False)
    layer.weight.grad = torch.tensor([[3.0, 4.0]])
    norms = grad_norm(layer, norm_type=2)
    assert norms["grad_2.0_norm/weight"].item() == pytest.approx(5.0)
    assert norms["grad_2.0_norm_total"].item() == pytest.approx(5.0)
    with pytest.raises(ValueError, match="norm_type"):
        grad_norm(layer, norm_type=0)


def test_human_readable_counts() -> None:
    assert get_human_readable_count(123) == "123  "  # a unit column keeps numbers aligned
    assert get_human_readable_count(1234) == "1.2 K"
    assert get_human_readable_count(2_000_000) == "2.0 M"


@pytest.mark.parametrize(("setting", "shown"), [("", True), ("off", False), ("0", False)])
def test_possible_user_warnings_can_be_switched_off_from_the_environment(setting: str, shown: bool) -> None:
    import subprocess
    import sys

    code = ("import warnings, torchbolt\n"
            "from torchbolt.utilities.warnings import PossibleUserWarning\n"
            "warnings.warn('check your loader', PossibleUserWarning)\n")
    env = {**os.environ, "POSSIBLE_USER_WARNINGS": setting}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert ("check your loader" in done.stderr) is shown
