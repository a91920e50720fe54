"""``trainer.fit_loop``, ``validate_loop``, ``test_loop`` and ``predict_loop``: present from ``Trainer(...)``, the
same objects across runs, and views over the Trainer's one set of settings and counters."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import torchbolt as pl
from tests.helpers.models import ClassifierModule, quiet_trainer
from torchbolt.loops.optimization.automatic import Closure
from torchbolt.loops.utilities import check_finite_loss
from torchbolt.utilities.rank_zero import PossibleUserWarning

# ClassifierModule: 8 training batches, 4 validation, 4 test and 4 predict batches per run


class _SeenLoops(pl.Callback):
    """Records the loop objects and counters callbacks see while a fit runs."""

    def __init__(self) -> None:
        self.loops: list[Any] = []
        self.epoch_processed_at_epoch_end: list[int] = []
        self.batches_in_epoch: list[tuple[int, int]] = []

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        progress = trainer.fit_loop.epoch_loop.batch_progress
        self.batches_in_epoch.append((progress.current.completed, progress.total.completed))

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.loops.append(trainer.fit_loop)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        # Lightning counts an epoch "processed" before its end hooks and "completed" after them
        self.epoch_processed_at_epoch_end.append(trainer.fit_loop.epoch_progress.current.processed)
        assert trainer.fit_loop.epoch_progress.current.completed == trainer.current_epoch


def test_the_loops_exist_before_fit_and_are_the_same_objects_during_and_after() -> None:
    seen = _SeenLoops()
    trainer = quiet_trainer(max_epochs=2, callbacks=[seen])
    loops = (trainer.fit_loop, trainer.validate_loop, trainer.test_loop, trainer.predict_loop)
    assert trainer.fit_loop.epoch_loop.val_loop is not trainer.validate_loop
    model = ClassifierModule()
    trainer.fit(model)
    trainer.validate(model, verbose=False)
    trainer.test(model, verbose=False)
    trainer.predict(model)
    assert seen.loops == [loops[0]]
    assert (trainer.fit_loop, trainer.validate_loop, trainer.test_loop, trainer.predict_loop) == loops
    assert seen.epoch_processed_at_epoch_end == [1, 2]
    # `current` counts the batches of the epoch in progress, `total` those of the whole fit; a batch counts
    # once its hooks are done (in on_train_batch_end it is not yet)
    assert seen.batches_in_epoch[:3] == [(0, 0), (1, 1), (2, 2)] and seen.batches_in_epoch[8:10] == [(0, 8), (1, 9)]


def test_max_epochs_is_none_until_a_fit_gives_it_its_value() -> None:
    trainer = quiet_trainer(max_epochs=None, max_steps=3)
    assert trainer.max_epochs is None and trainer.fit_loop.max_epochs is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", PossibleUserWarning)  # another limit is set: no 1000-epoch warning
        trainer.fit(ClassifierModule())
    assert trainer.max_epochs == trainer.fit_loop.max_epochs == -1
    assert trainer.global_step == 3


@pytest.mark.parametrize(
    ("max_epochs", "max_steps", "done"),
    [(-1, -1, False), (5, -1, False), (-1, 10, False), (None, 0, True), (0, -1, True), (-1, 0, True)],
)
def test_fit_loop_done_before_fit(max_epochs: int | None, max_steps: int, done: bool) -> None:
    trainer = quiet_trainer(max_epochs=max_epochs, max_steps=max_steps)
    assert trainer.max_epochs == max_epochs and trainer.fit_loop.max_steps == max_steps
    assert trainer.fit_loop.done is done


def test_limits_set_on_the_fit_loop_apply_to_the_next_fit() -> None:
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=0)
    model = ClassifierModule()
    trainer.fit(model)
    assert trainer.current_epoch == 1 and trainer.global_step == 8
    trainer.fit_loop.max_epochs = 3
    trainer.fit_loop.epoch_loop.max_steps = 20
    assert trainer.max_epochs == 3 and trainer.max_steps == trainer.fit_loop.max_steps == 20
    trainer.fit(model)  # continues from the counters of the first fit, up to the new limits
    # the step limit ends the third epoch after 4 of its batches; that epoch counts as done
    assert trainer.global_step == 20 and trainer.current_epoch == 3
    trainer.fit_loop.min_epochs = 1
    trainer.fit_loop.min_steps = 2
    assert (trainer.min_epochs, trainer.min_steps) == (1, 2)


def test_bad_limits_are_refused_with_the_attribute_named() -> None:
    trainer = quiet_trainer()
    with pytest.raises(ValueError, match=r"`fit_loop.max_epochs` must be an int >= -1 or None, got -2"):
        trainer.fit_loop.max_epochs = -2
    with pytest.raises(ValueError, match=r"`fit_loop.max_steps` must be an int >= -1, got 1.5"):
        trainer.fit_loop.epoch_loop.max_steps = 1.5  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"`fit_loop.max_batches` must be a batch count >= 0"):
        trainer.fit_loop.max_batches = -1
    assert trainer.max_epochs == 1 and trainer.max_steps == -1


def test_progress_reads_the_fit_counters_in_lightnings_shape() -> None:
    trainer = quiet_trainer(max_epochs=2, accumulate_grad_batches=2)
    trainer.fit(ClassifierModule())
    loop = trainer.fit_loop
    epochs, batches = loop.epoch_progress, loop.epoch_loop.batch_progress
    assert epochs.current.ready == epochs.current.started == epochs.current.processed == 2
    assert epochs.current.completed == epochs.total.completed == trainer.current_epoch == 2
    # after the last epoch the next one's count has started (from 0): Progress counts per epoch in progress
    assert batches.total.completed == 16 and batches.current.completed == 0 and batches.is_last_batch is False
    assert loop.batch_idx == loop.epoch_loop.batch_idx == 7 and loop.total_batch_idx == 15
    step = loop.epoch_loop.automatic_optimization.optim_progress.optimizer.step
    assert step.total.completed == step.total.ready == trainer.global_step == 8
    assert loop.epoch_loop.automatic_optimization.optim_progress.optimizer_steps == 8
    assert loop.epoch_loop._batches_that_stepped == 8
    assert loop.max_batches == trainer.num_training_batches == 8


def test_writing_a_progress_count_sets_the_trainers_counter() -> None:
    trainer = quiet_trainer()
    loop = trainer.fit_loop
    loop.epoch_loop.automatic_optimization.optim_progress.optimizer.step.total.completed = 5
    loop.epoch_progress.current.completed = 3
    loop.epoch_loop.batch_progress.current.ready = 4
    loop.max_batches = 10
    assert trainer.global_step == 5 and trainer.current_epoch == 3 and trainer.num_training_batches == 10
    assert loop.epoch_loop.batch_progress.current.completed == 4
    with pytest.raises(ValueError, match=r"fit_loop.epoch_progress.current.completed` must be an int >= 0"):
        loop.epoch_progress.current.completed = -1
    with pytest.raises(AttributeError, match="has no `started` count"):
        _ = loop.epoch_loop.automatic_optimization.optim_progress.optimizer.step.total.started
    assert trainer.current_epoch == 3


def test_stop_requests_respect_min_epochs_in_done() -> None:
    trainer = quiet_trainer(max_epochs=100, min_epochs=4)
    trainer.fit_loop.max_batches = 10
    trainer.should_stop = True
    trainer.fit_loop.epoch_progress.current.processed = 3
    assert not trainer.fit_loop._can_stop_early and not trainer.fit_loop.done
    trainer.fit_loop.epoch_progress.current.processed = 4
    assert trainer.fit_loop._can_stop_early and trainer.fit_loop.done


def test_state_dict_is_what_a_checkpoint_stores_and_loads_back(tmp_path: Path) -> None:
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=2)
    trainer.fit(ClassifierModule())
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    state = trainer.fit_loop.state_dict()
    stored = torch.load(path, weights_only=False)["loops"]
    assert {k: v for k, v in stored["fit_loop"].items() if k != "torchbolt"} == state
    assert stored["validate_loop"] == trainer.validate_loop.state_dict()
    assert state["epoch_loop.val_loop.batch_progress"]["total"]["completed"] == 2  # sanity batches not counted

    fresh = quiet_trainer()
    before = fresh.fit_loop.state_dict()
    fresh.fit_loop.load_state_dict(state)
    assert fresh.fit_loop.state_dict() == state and fresh.global_step == 3 and fresh.current_epoch == 1
    with pytest.raises(ValueError, match="epoch_progress"):
        quiet_trainer().fit_loop.load_state_dict({"epoch_progress": {"current": {"processed": -1}}})
    assert quiet_trainer().fit_loop.state_dict() == before


def test_evaluation_loops_count_their_batches_per_run_and_in_total() -> None:
    trainer = quiet_trainer(max_epochs=1, num_sanity_val_steps=2)
    model = ClassifierModule()
    trainer.fit(model)
    val_in_fit = trainer.fit_loop.epoch_loop.val_loop
    assert val_in_fit.batch_progress.current.completed == 4 and val_in_fit.max_batches == [4]
    assert not val_in_fit.inference_mode
    trainer.validate(model, verbose=False)
    trainer.validate(model, verbose=False)
    progress = trainer.validate_loop.batch_progress
    assert (progress.current.completed, progress.total.completed) == (4, 8)
    assert trainer.validate_loop.verbose is False and trainer.validate_loop.inference_mode
    assert val_in_fit.batch_progress.total.completed == 4  # the fit's validation is counted apart
    trainer.test(model)
    assert trainer.test_loop.batch_progress.current.completed == 4 and trainer.test_loop.max_batches == [4]
    assert trainer.test_loop.verbose is True
    predictions = trainer.predict(model)
    assert trainer.predict_loop.batch_progress.total.completed == 4 and trainer.predict_loop.max_batches == [4]
    assert trainer.predict_loop.predictions == predictions and len(predictions) == 4
    assert trainer.predict_loop.state_dict()["batch_progress"]["current"]["completed"] == 4


class _SaveAtBatch(pl.Callback):
    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.current_epoch == 0 and batch_idx == 2:
            trainer.save_checkpoint(self.path)


class _RecordRestarting(pl.Callback):
    def __init__(self) -> None:
        self.seen: dict[str, tuple[bool, bool]] = {}

    def _record(self, trainer: Any, when: str) -> None:
        self.seen[when] = (trainer.fit_loop.restarting, trainer.fit_loop.epoch_loop.restarting)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._record(trainer, "start")

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._record(trainer, "end")


def test_restarting_is_true_until_a_resumed_fit_reaches_its_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "mid.ckpt"
    first = quiet_trainer(max_epochs=1, limit_val_batches=0, callbacks=[_SaveAtBatch(path)])
    first.fit(ClassifierModule())
    assert not first.fit_loop.restarting
    record = _RecordRestarting()
    resumed = quiet_trainer(max_epochs=1, limit_val_batches=0, callbacks=[record])
    resumed.fit(ClassifierModule(), ckpt_path=path)
    assert record.seen == {"start": (True, True), "end": (False, False)}
    assert resumed.global_step == 8


def test_closure_is_what_optimizer_step_receives() -> None:
    seen: list[bool] = []

    class Model(ClassifierModule):
        def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
            seen.append(isinstance(optimizer_closure, Closure))
            optimizer.step(closure=optimizer_closure)

    quiet_trainer(max_steps=2, limit_val_batches=0).fit(Model())
    assert seen == [True, True]
    assert isinstance(Closure.warning_cache, set)


def test_check_finite_loss_names_the_bad_value() -> None:
    check_finite_loss(torch.tensor(1.0))
    check_finite_loss(None)
    with pytest.raises(ValueError, match="The loss returned in `training_step` is nan"):
        check_finite_loss(torch.tensor(float("nan")))


def test_a_pickled_trainer_keeps_loop_views_over_its_own_counters() -> None:
    # spawned processes receive the Trainer pickled: the views must travel with it and read the copy
    import pickle

    trainer = quiet_trainer(max_epochs=2)
    trainer.fit_loop.epoch_progress.current.completed = 1
    copy = pickle.loads(pickle.dumps(trainer))
    copy.fit_loop.epoch_progress.current.completed = 2
    assert (trainer.current_epoch, copy.current_epoch) == (1, 2)
    assert copy.fit_loop.max_epochs == 2 and copy.validate_loop.batch_progress.total.completed == 0
