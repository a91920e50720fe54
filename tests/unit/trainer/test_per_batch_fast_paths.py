"""The per-step fast paths skip only what nobody observes: overridden hooks, strategies and precisions
still get their calls, in order."""

from __future__ import annotations

import weakref
from collections import namedtuple
from typing import Any

import pytest
import torch
from torch import Tensor

import torchbolt as pl
from torchbolt.callbacks import Callback
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.plugins.precision import Precision
from torchbolt.strategies import SingleDeviceStrategy
from torchbolt.utilities.apply_func import batch_mover, move_data_to_device


def _trainer(**kwargs: Any) -> pl.Trainer:
    defaults: dict[str, Any] = dict(accelerator="cpu", max_epochs=1, limit_train_batches=3, limit_val_batches=0,
                                    logger=False, enable_progress_bar=False, enable_model_summary=False,
                                    enable_checkpointing=False)
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


def test_a_callback_overriding_one_batch_hook_is_called_every_batch() -> None:
    seen: list[int] = []

    class OnlyBeforeBackward(Callback):
        def on_before_backward(self, trainer: pl.Trainer, pl_module: Any, loss: Tensor) -> None:
            seen.append(trainer.global_step)

    _trainer(callbacks=[OnlyBeforeBackward()]).fit(BoringModel())
    assert seen == [0, 1, 2]


def test_overridden_optimizer_hooks_replace_the_inlined_defaults() -> None:
    calls: list[str] = []

    class Custom(BoringModel):
        def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
            calls.append(f"zero_grad:{batch_idx}")
            optimizer.zero_grad(set_to_none=False)

        def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
            calls.append(f"step:{batch_idx}")
            optimizer.step(closure=optimizer_closure)

    _trainer().fit(Custom())
    assert calls == ["step:0", "zero_grad:0", "step:1", "zero_grad:1", "step:2", "zero_grad:2"]


def test_on_train_batch_start_returning_minus_one_ends_the_epoch() -> None:
    class Stop(BoringModel):
        def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
            return -1 if batch_idx == 1 else None

    trainer = _trainer()
    trainer.fit(Stop())
    assert trainer.global_step == 1


def test_a_strategy_overriding_batch_to_device_is_used() -> None:
    moved: list[int] = []

    class Recording(SingleDeviceStrategy):
        def batch_to_device(self, batch: Any, device: torch.device | None = None, dataloader_idx: int = 0) -> Any:
            moved.append(dataloader_idx)
            return super().batch_to_device(batch, device, dataloader_idx)

    _trainer(strategy=Recording("cpu")).fit(BoringModel())
    assert moved == [0, 0, 0]


def test_precision_convert_input_runs_before_the_batch_hooks() -> None:
    order: list[str] = []

    class Marking(Precision):
        def convert_input(self, data: Any) -> Any:
            order.append("convert_input")
            return data * 0  # visible to the hooks and the step

    class Hooked(BoringModel):
        def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
            order.append("on_before_batch_transfer")
            assert torch.count_nonzero(batch) == 0
            return batch

    _trainer(plugins=[Marking()], limit_train_batches=1).fit(Hooked())
    assert order == ["convert_input", "on_before_batch_transfer"]


def test_batch_transfer_keeps_the_container_types() -> None:
    device = torch.device("cpu")
    x, y = torch.ones(2), torch.zeros(2)
    assert type(move_data_to_device((x, y), device)) is tuple
    assert type(move_data_to_device([x, y], device)) is list
    mixed = move_data_to_device((x, ["a"], {"k": y}, 3), device)
    assert mixed[1] == ["a"] and torch.equal(mixed[2]["k"], y) and mixed[3] == 3
    Pair = namedtuple("Pair", "x y")
    assert type(move_data_to_device(Pair(x, y), device)) is Pair


def test_the_per_run_batch_mover_gives_what_move_data_to_device_gives() -> None:
    cpu = torch.device("cpu")
    move = batch_mover(cpu)
    x, y = torch.ones(2), torch.zeros(2)
    pair = (x, y)
    assert move(pair) is pair  # already on the CPU: nothing to rebuild (a tuple cannot change)
    assert move(x) is x
    as_list = [x, y]
    moved_list = move(as_list)
    assert moved_list == as_list and moved_list is not as_list  # a list is copied, so the step may change it
    Pair = namedtuple("Pair", "x y")
    assert type(move(Pair(x, y))) is Pair
    mixed = move((x, ["a"], {"k": y}, 3))
    assert mixed[1] == ["a"] and torch.equal(mixed[2]["k"], y) and mixed[3] == 3
    meta = batch_mover(torch.device("meta"))((x, y))  # another device: every tensor goes there
    assert all(t.device.type == "meta" for t in meta) and type(meta) is tuple


def test_a_trainer_step_sees_the_loader_batch_on_the_cpu() -> None:
    seen: list[Any] = []
    pairs = [(torch.randn(4, 32), torch.randn(4, 2)) for _ in range(3)]

    class Recording(BoringModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            seen.append(batch)
            return self.step(batch[0])

        def train_dataloader(self) -> Any:
            return Batches()

    class Batches:  # an iterable of ready-made batches (what a loader with `batch_size=None` yields, say)
        def __iter__(self) -> Any:
            return iter(pairs)

        def __len__(self) -> int:
            return len(pairs)

    _trainer().fit(Recording())
    assert len(seen) == 3 and all(a is b for a, b in zip(seen, pairs))


def test_logging_a_later_value_of_another_dtype_is_converted_to_the_first_one() -> None:
    class Mixed(BoringModel):
        def training_step(self, batch: Any, batch_idx: int) -> Tensor:
            loss = super().training_step(batch, batch_idx)["loss"]
            value = torch.tensor(batch_idx, dtype=torch.float64 if batch_idx else torch.float32)
            self.log("value", value, on_epoch=True, reduce_fx="sum")
            return loss

    trainer = _trainer()
    trainer.fit(Mixed())
    assert trainer.callback_metrics["value_epoch"].dtype == torch.float32
    assert trainer.callback_metrics["value_epoch"].item() == 3.0


def test_a_strategy_overriding_training_step_and_backward_is_used() -> None:
    calls: list[str] = []

    class Wrapping(SingleDeviceStrategy):
        def training_step(self, *args: Any, **kwargs: Any) -> Any:
            calls.append("training_step")
            return super().training_step(*args, **kwargs)

        def backward(self, closure_loss: Tensor, optimizer: Any, *args: Any, **kwargs: Any) -> Tensor:
            calls.append("backward")
            return super().backward(closure_loss, optimizer, *args, **kwargs)

    _trainer(strategy=Wrapping("cpu"), limit_train_batches=2).fit(BoringModel())
    assert calls == ["training_step", "backward", "training_step", "backward"]


def test_a_precision_with_a_forward_context_and_loss_transform_is_applied() -> None:
    seen: list[Any] = []

    class Scaling(Precision):
        def forward_context(self) -> Any:
            return torch.autocast("cpu", dtype=torch.bfloat16)

        def pre_backward(self, tensor: Tensor, module: Any) -> Tensor:
            seen.append("pre_backward")
            return tensor * 0  # no gradient reaches the weights

    class Recording(BoringModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            seen.append(self(batch).dtype)
            return super().training_step(batch, batch_idx)

    model = Recording()
    before = model.layer.weight.detach().clone()
    _trainer(plugins=[Scaling()], limit_train_batches=1).fit(model)
    assert seen == [torch.bfloat16, "pre_backward"]
    assert torch.equal(model.layer.weight, before)


def test_evaluation_batch_hooks_and_strategy_steps_are_called_when_overridden() -> None:
    calls: list[str] = []

    class OnlyValBatchEnd(Callback):
        def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any,
                                    batch_idx: int, dataloader_idx: int = 0) -> None:
            calls.append(f"cb:{batch_idx}")

    class Wrapping(SingleDeviceStrategy):
        def validation_step(self, *args: Any, **kwargs: Any) -> Any:
            calls.append("strategy")
            return super().validation_step(*args, **kwargs)

    trainer = _trainer(strategy=Wrapping("cpu"), callbacks=[OnlyValBatchEnd()], limit_val_batches=2)
    trainer.validate(BoringModel(), verbose=False)
    assert calls == ["strategy", "cb:0", "strategy", "cb:1"]


def test_model_checkpoint_batch_hook_runs_when_it_can_do_something(tmp_path: Any) -> None:
    # a default ModelCheckpoint saves nothing at a batch's end and is not called there; one that saves
    # every N steps, a subclass's own hook and a hook patched on the class are called every batch
    from unittest import mock

    from torchbolt.callbacks import ModelCheckpoint

    seen: list[int] = []

    class Counting(ModelCheckpoint):
        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            seen.append(batch_idx)
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    _trainer(callbacks=[Counting(dirpath=tmp_path / "a")], enable_checkpointing=True).fit(BoringModel())
    assert seen == [0, 1, 2]

    every = ModelCheckpoint(dirpath=tmp_path / "b", every_n_train_steps=2, save_top_k=-1)
    _trainer(callbacks=[every], enable_checkpointing=True, limit_train_batches=4).fit(BoringModel())
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt"]

    original = ModelCheckpoint.on_train_batch_end
    with mock.patch.object(ModelCheckpoint, "on_train_batch_end", autospec=True, side_effect=original) as patched:
        _trainer(callbacks=[ModelCheckpoint(dirpath=tmp_path / "c")], enable_checkpointing=True).fit(BoringModel())
    assert patched.call_count == 3


class _KeepOutputs(Callback):
    """Keeps what each batch hands to ``on_train_batch_end``."""

    def __init__(self) -> None:
        self.kept: list[Any] = []

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.kept.append(outputs)


def test_each_batch_hands_its_own_outputs_to_on_train_batch_end() -> None:
    # the loop reuses one closure for every batch; what a callback keeps from a batch stays that batch's
    keep = _KeepOutputs()
    returned: list[Tensor] = []

    class DictThenTensor(BoringModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            loss = self.step(batch)
            returned.append(loss.detach().clone())
            # batch 0 returns extra entries; the later batches return the bare loss and must not show them
            return {"loss": loss, "extra": batch_idx} if batch_idx == 0 else loss

    _trainer(callbacks=[keep]).fit(DictThenTensor())
    kept = keep.kept
    assert [sorted(o) for o in kept] == [["extra", "loss"], ["loss"], ["loss"]]
    assert len({id(o) for o in kept}) == 3
    for outputs, loss in zip(kept, returned):
        assert not outputs["loss"].requires_grad
        torch.testing.assert_close(outputs["loss"], loss)


def test_a_step_returning_none_hands_empty_outputs_after_a_step_with_a_loss() -> None:
    keep = _KeepOutputs()

    class SkipsOdd(BoringModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return None if batch_idx % 2 else self.step(batch)

    trainer = _trainer(callbacks=[keep])
    trainer.fit(SkipsOdd())
    assert [sorted(o) for o in keep.kept] == [["loss"], [], ["loss"]]
    assert trainer.global_step == 3  # a skipped batch still counts as a step, as in Lightning


def test_the_optimizer_closure_can_be_kept_and_called_within_the_step() -> None:
    # LBFGS-style: the optimizer calls the closure several times in one step; each call recomputes the loss
    calls: list[int] = []

    class CallsTwice(BoringModel):
        def training_step(self, batch: Any, batch_idx: int) -> Tensor:
            calls.append(batch_idx)
            return self.step(batch)

        def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
            first = optimizer_closure()
            second = optimizer_closure()
            assert first is not None and second is not None and optimizer_closure.called
            optimizer.step()

    _trainer().fit(CallsTwice())
    assert calls == [0, 0, 1, 1, 2, 2]


def test_validation_runs_at_the_epoch_end_and_at_a_batch_interval() -> None:
    seen: list[tuple[int, int]] = []

    class Record(Callback):
        def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
            seen.append((trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_idx))

    _trainer(callbacks=[Record()], max_epochs=2, limit_train_batches=4, limit_val_batches=1,
             num_sanity_val_steps=0).fit(BoringModel())
    assert seen == [(0, 3), (1, 3)]
    seen.clear()
    _trainer(callbacks=[Record()], max_epochs=1, limit_train_batches=4, limit_val_batches=1,
             num_sanity_val_steps=0, val_check_interval=2).fit(BoringModel())
    assert seen == [(0, 1), (0, 3)]


def test_a_stop_requested_mid_epoch_validates_at_that_batch() -> None:
    # as in Lightning: `trainer.should_stop` ends the epoch after the batch, with a validation first
    seen: list[int] = []

    class StopAtOne(Callback):
        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if batch_idx == 1:
                trainer.should_stop = True

        def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
            seen.append(trainer.fit_loop.epoch_loop.batch_idx)

    trainer = _trainer(callbacks=[StopAtOne()], max_epochs=3, limit_train_batches=5, limit_val_batches=1,
                       num_sanity_val_steps=0)
    trainer.fit(BoringModel())
    assert seen == [1] and trainer.global_step == 2


def test_a_sized_loader_is_never_asked_for_a_batch_past_the_epoch() -> None:
    fetched: list[int] = []

    class Counting(torch.utils.data.Dataset[Tensor]):
        def __len__(self) -> int:
            return 64

        def __getitem__(self, index: int) -> Tensor:
            fetched.append(index)
            return torch.randn(32)

    class Model(BoringModel):
        def train_dataloader(self) -> Any:
            return torch.utils.data.DataLoader(Counting(), batch_size=1)

    _trainer(limit_train_batches=3).fit(Model())
    assert fetched == [0, 1, 2]


class _Tag:
    """An object a batch's autograd graph keeps alive (weakly referenced by the tests)."""


class _Tagged(torch.autograd.Function):
    """Identity on the loss whose graph node holds a ``_Tag``: the tag lives exactly as long as that graph."""

    @staticmethod
    def forward(ctx: Any, loss: Tensor, tag: _Tag) -> Tensor:
        ctx.tag = tag
        return loss.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


class _TagsGraphs(BoringModel):
    """Records, for each batch, a weak reference to its graph and whether the previous batch's graph was alive
    when this batch's ``training_step`` began."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.graphs: list[weakref.ref[_Tag]] = []
        self.previous_alive: list[bool] = []
        self.fail_at = fail_at

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        if self.graphs:
            self.previous_alive.append(self.graphs[-1]() is not None)
        if batch_idx == self.fail_at:
            raise RuntimeError("stop here")
        tag = _Tag()
        self.graphs.append(weakref.ref(tag))
        return _Tagged.apply(self.step(batch), tag)  # type: ignore[no-any-return]


def test_the_previous_batch_graph_lives_until_the_next_forward_as_in_a_hand_written_loop() -> None:
    # like a loop's `loss` variable: the parameters' gradient accumulators are reused by the next forward
    # instead of being destroyed and rebuilt every batch (a measurable share of a small model's step)
    model = _TagsGraphs()
    _trainer(limit_train_batches=4).fit(model)
    assert model.previous_alive == [True, True, True]
    # ...and the last batch's graph does not outlive the fit
    assert [ref() for ref in model.graphs] == [None] * 4


def test_the_last_graph_is_released_when_the_fit_fails() -> None:
    model = _TagsGraphs(fail_at=2)
    with pytest.raises(RuntimeError, match="stop here"):
        _trainer(limit_train_batches=4).fit(model)
    assert len(model.graphs) == 2 and [ref() for ref in model.graphs] == [None, None]


def test_a_custom_backward_does_not_have_its_graph_kept() -> None:
    # a `backward` hook may retain the graph (its buffers included): the loop then keeps nothing of it
    class RetainsGraph(_TagsGraphs):
        def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
            loss.backward(retain_graph=True)

    model = RetainsGraph()
    _trainer(limit_train_batches=3).fit(model)
    assert model.previous_alive == [False, False]


def test_a_graph_is_kept_the_same_way_when_callbacks_listen_around_backward() -> None:
    seen: list[int] = []

    class AfterBackward(Callback):
        def on_after_backward(self, trainer: Any, pl_module: Any) -> None:
            seen.append(trainer.global_step)

    model = _TagsGraphs()
    _trainer(limit_train_batches=3, callbacks=[AfterBackward()]).fit(model)
    assert seen == [0, 1, 2]
    assert model.previous_alive == [True, True]
    assert [ref() for ref in model.graphs] == [None] * 3


def test_a_mock_callback_records_every_hook_in_order() -> None:
    # code that checks its callbacks with `Mock(spec=Callback)` expects every hook to be called, as Lightning does
    from unittest.mock import Mock

    recorder = Mock(spec=Callback)
    _trainer(callbacks=[recorder], limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0).fit(
        BoringModel())
    assert [call[0] for call in recorder.method_calls] == [
        "setup", "on_fit_start", "on_train_start", "on_train_epoch_start", "on_train_batch_start",
        "on_before_zero_grad", "on_before_backward", "on_after_backward", "on_before_optimizer_step",
        "on_train_batch_end", "on_validation_start", "on_validation_epoch_start", "on_validation_batch_start",
        "on_validation_batch_end", "on_validation_epoch_end", "on_validation_end", "on_train_epoch_end",
        "on_train_end", "on_fit_end", "teardown"]
