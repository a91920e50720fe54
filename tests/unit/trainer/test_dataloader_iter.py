"""Steps that fetch their own batches: ``*_step(self, dataloader_iter)`` gets an iterator of
``(batch, batch_idx, dataloader_idx)`` and calls ``next`` on it as often as it wants."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from tests.helpers.models import ClassifierModule, loader, quiet_trainer
from torchbolt.trainer.dataloader_iter import takes_dataloader_iter
from torchbolt.utilities.exceptions import MisconfigurationException

pytestmark = pytest.mark.filterwarnings("ignore:.*dataloader_iter.*")


class _FetchesTwo(ClassifierModule):
    """Each training step fetches two batches and trains on both."""

    def __init__(self) -> None:
        super().__init__()
        self.fetched: list[tuple[int, int]] = []
        self.start_args: list[tuple[Any, int]] = []
        self.end_args: list[tuple[Any, int]] = []
        self.steps = 0

    def training_step(self, dataloader_iter: Iterator[Any]) -> torch.Tensor:
        losses = []
        for _ in range(2):
            (x, y), batch_idx, dataloader_idx = next(dataloader_iter)
            self.fetched.append((batch_idx, dataloader_idx))
            losses.append(F.cross_entropy(self(x), y))
        self.steps += 1
        loss = torch.stack(losses).mean()
        self.log("train_loss", loss, batch_size=16)
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.start_args.append((None if batch is None else batch[1].tolist(), batch_idx))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.end_args.append((batch[1].tolist(), batch_idx))


def test_training_step_consumes_several_batches_per_step() -> None:
    model = _FetchesTwo()
    trainer = quiet_trainer(limit_val_batches=0)
    with pytest.warns(UserWarning, match="takes `dataloader_iter`"):
        trainer.fit(model, loader(64, batch_size=8))  # 8 batches
    assert model.fetched == [(i, 0) for i in range(8)]
    assert model.steps == 4
    assert trainer.global_step == 4  # one optimizer step per training_step call
    assert trainer.fit_loop.epoch_loop.batch_progress.total.completed == 4
    assert "train_loss" in trainer.callback_metrics
    # the start hook sees the batch fetched last before the step (none before the first), the end hook the
    # batch fetched last by the step
    labels = [b[1].tolist() for b in loader(64, batch_size=8)]
    assert model.end_args == [(labels[i], i) for i in (1, 3, 5, 7)]
    assert model.start_args == [(None, 0), *model.end_args[:-1]]


def test_limit_train_batches_bounds_the_iterator_and_validation_runs_at_epoch_end() -> None:
    validated: list[int] = []

    class Model(_FetchesTwo):
        def on_validation_epoch_end(self) -> None:
            validated.append(self.trainer.fit_loop.epoch_loop.batch_idx)

    model = Model()
    trainer = quiet_trainer(limit_train_batches=6, limit_val_batches=1, num_sanity_val_steps=0, max_epochs=2)
    trainer.fit(model, loader(64, batch_size=8), loader(16))
    assert [idx for idx, _ in model.fetched] == list(range(6)) * 2
    assert model.steps == 6
    assert len(validated) == 2  # once per epoch, at its end, although 3 steps < 6 batches


class _UnsizedData(IterableDataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(self.n):
            yield torch.randn(8), torch.tensor(i % 2)


@pytest.mark.parametrize("catch", [False, True])
def test_stop_iteration_ends_the_epoch_without_length(catch: bool) -> None:
    class Model(ClassifierModule):
        def __init__(self) -> None:
            super().__init__()
            self.fetched = 0
            self.ends = 0

        def training_step(self, dataloader_iter: Iterator[Any]) -> Any:
            losses = []
            for _ in range(2):
                try:
                    (x, y), _, _ = next(dataloader_iter)
                except StopIteration:
                    if not catch:
                        raise
                    break
                self.fetched += 1
                losses.append(F.cross_entropy(self(x), y))
            return torch.stack(losses).mean() if losses else None

        def on_train_batch_end(self, *args: Any) -> None:
            self.ends += 1

    model = Model()
    trainer = quiet_trainer(limit_val_batches=0, max_epochs=2)
    trainer.fit(model, DataLoader(_UnsizedData(5), batch_size=1))
    assert model.fetched == 10  # both epochs consumed every batch
    # 5 batches, 2 per step: the third step finds one batch; when it does not catch the StopIteration, that
    # step does not complete (no on_train_batch_end), as in Lightning
    assert model.ends == (6 if catch else 4)
    assert trainer.current_epoch == 2


def test_manual_optimization() -> None:
    class Manual(ClassifierModule):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, dataloader_iter: Iterator[Any]) -> None:
            (x, y), _, _ = next(dataloader_iter)
            (x2, y2), _, _ = next(dataloader_iter)
            opt = self.optimizers()
            opt.zero_grad()
            self.manual_backward(F.cross_entropy(self(torch.cat([x, x2])), torch.cat([y, y2])))
            opt.step()

    trainer = quiet_trainer(limit_val_batches=0)
    trainer.fit(Manual(), loader(32, batch_size=8))
    assert trainer.global_step == 2


def test_log_in_training_step_needs_a_batch_size() -> None:
    class Model(ClassifierModule):
        def training_step(self, dataloader_iter: Iterator[Any]) -> torch.Tensor:
            (x, y), _, _ = next(dataloader_iter)
            loss = F.cross_entropy(self(x), y)
            self.log("train_loss", loss)
            return loss

    with pytest.raises(MisconfigurationException, match="batch_size"):
        quiet_trainer(limit_val_batches=0).fit(Model(), loader(16))


class _EvalRecorder(ClassifierModule):
    def __init__(self) -> None:
        super().__init__()
        self.starts: list[tuple[Any, int, int]] = []
        self.steps: list[tuple[Any, int, int]] = []
        self.ends: list[tuple[Any, int, int]] = []

    def validation_step(self, dataloader_iter: Iterator[Any]) -> None:
        self.steps.append(next(dataloader_iter))

    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.starts.append((batch, batch_idx, dataloader_idx))

    def on_validation_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.ends.append((batch, batch_idx, dataloader_idx))

    def test_step(self, dataloader_iter: Iterator[Any]) -> None:
        (x, y), _, _ = next(dataloader_iter)
        self.log("test_loss", F.cross_entropy(self(x), y))

    def predict_step(self, dataloader_iter: Iterator[Any]) -> Any:
        return next(dataloader_iter)


def test_validation_iterates_all_loaders_in_sequence() -> None:
    model = _EvalRecorder()
    quiet_trainer(limit_val_batches=1).validate(model, {"a": [10, 11], "b": [20, 21]})
    assert model.steps == [(10, 0, 0), (20, 0, 1)]
    assert model.ends == model.steps
    assert model.starts == [(None, 0, 0), (10, 0, 0)]


def test_test_logs_and_predict_collects_per_loader() -> None:
    model = _EvalRecorder()
    trainer = quiet_trainer()
    (metrics,) = trainer.test(model, loader(32))
    assert "test_loss" in metrics
    predictions = trainer.predict(model, [[1, 2], [3]])
    assert predictions == [[(1, 0, 0), (2, 1, 0)], [(3, 0, 1)]]


def test_the_step_may_take_dataloader_idx_free_signature_with_several_loaders() -> None:
    # the step gets the index from the iterator: no `dataloader_idx` parameter is needed with several loaders
    model = _EvalRecorder()
    quiet_trainer().validate(model, [[1], [2, 3]])
    assert model.steps == [(1, 0, 0), (2, 0, 1), (3, 1, 1)]


def test_signature_detection() -> None:
    class M(ClassifierModule):
        def validation_step(self, *args: Any) -> None: ...

        def test_step(self, batch: Any, dataloader_iter: Any = None) -> None: ...

    m = M()
    assert takes_dataloader_iter(_EvalRecorder().validation_step)
    assert not takes_dataloader_iter(m.validation_step)  # *args is not an explicit `dataloader_iter`
    assert takes_dataloader_iter(m.test_step)
    assert not takes_dataloader_iter(m.training_step)
