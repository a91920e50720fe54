"""What ``validate``/``test`` pass to the step and batch hooks: ``batch_idx`` and ``dataloader_idx`` by signature,
and one combined batch for a ``CombinedLoader`` iterated in parallel."""

from __future__ import annotations

from typing import Any

import pytest
from torch.utils.data import DataLoader

from tests.helpers.models import ClassifierModule, loader, quiet_trainer
from torchbolt.utilities import CombinedLoader


class _TwoLoaders(ClassifierModule):
    def val_dataloader(self) -> list[DataLoader]:
        return [loader(16), loader(16)]

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        pass


@pytest.mark.parametrize("mode", ["max_size_cycle", "min_size", "max_size"])
@pytest.mark.parametrize("fn", ["validate", "test"])
def test_a_parallel_combined_loader_gives_one_batch_of_each(fn: str, mode: str) -> None:
    seen: list[Any] = []

    class Combined(ClassifierModule):
        def validation_step(self, batch: Any, batch_idx: int) -> None:  # no dataloader_idx: one loader
            seen.append(batch)

        def test_step(self, batch: Any, batch_idx: int) -> None:
            seen.append(batch)

    trainer = quiet_trainer()
    getattr(trainer, fn)(Combined(), CombinedLoader({"a": [0, 1, 2], "b": [3, 4]}, mode), verbose=False)  # type: ignore[arg-type]
    expected = {
        "max_size_cycle": [{"a": 0, "b": 3}, {"a": 1, "b": 4}, {"a": 2, "b": 3}],
        "min_size": [{"a": 0, "b": 3}, {"a": 1, "b": 4}],
        "max_size": [{"a": 0, "b": 3}, {"a": 1, "b": 4}, {"a": 2, "b": None}],
    }[mode]
    assert seen == expected
    assert (trainer.num_val_batches if fn == "validate" else trainer.num_test_batches) == [3, 2]
    shown = trainer.val_dataloaders if fn == "validate" else trainer.test_dataloaders
    assert shown == {"a": [0, 1, 2], "b": [3, 4]}


def test_the_step_may_leave_out_batch_idx() -> None:
    batches: list[int] = []

    class NoIndex(ClassifierModule):
        def validation_step(self, batch: Any) -> None:
            batches.append(len(batch[0]))

    quiet_trainer(limit_val_batches=2).validate(NoIndex(), verbose=False)
    assert batches == [8, 8]


def test_several_loaders_need_dataloader_idx_in_the_batch_hooks_too() -> None:
    class HookWithoutIndex(_TwoLoaders):
        def on_validation_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
            pass

    with pytest.raises(RuntimeError, match="no `dataloader_idx` argument in `HookWithoutIndex.on_validation_batch_end"):
        quiet_trainer().validate(HookWithoutIndex(), verbose=False)


def test_star_args_take_the_index_but_star_star_kwargs_do_not() -> None:
    class StarArgs(_TwoLoaders):
        def validation_step(self, batch: Any, batch_idx: int, *rest: Any) -> None:
            assert rest in ((0,), (1,))

    quiet_trainer(limit_val_batches=1).validate(StarArgs(), verbose=False)

    class StarStarKwargs(_TwoLoaders):
        def validation_step(self, batch: Any, batch_idx: int, **rest: Any) -> None:  # type: ignore[override]
            pass

    with pytest.raises(RuntimeError, match="StarStarKwargs.validation_step"):
        quiet_trainer().validate(StarStarKwargs(), verbose=False)


def test_one_loader_and_a_required_dataloader_idx_is_an_error() -> None:
    class Required(ClassifierModule):
        def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
            pass

    with pytest.raises(RuntimeError, match="only a single `test_dataloader`.*Required.on_test_batch_start"):
        quiet_trainer().test(Required(), verbose=False)
