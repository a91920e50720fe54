"""``AsyncCheckpointIO``: writes on a background thread, in call order, with errors raised later.

The plug-ins used here are real ``CheckpointIO`` subclasses writing real files; the gated one
holds its write until the test lets it go, so the tests can look at the moment a write is in flight.
"""

from __future__ import annotations

import copy
import os
import pickle
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import torchbolt as pl
from torchbolt.plugins import AsyncCheckpointIO
from torchbolt.plugins.io import CheckpointIO, TorchCheckpointIO, wait_for_checkpoint_writes
from torchbolt.strategies import SingleDeviceStrategy
from torchbolt.utilities.cloud_io import _load


class GatedIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose writes wait for ``gate``; counts how many run at the same time."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()
        self._lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.started.set()
        try:
            assert self.gate.wait(20), "the test never opened the gate"
            super().save_checkpoint(checkpoint, path, storage_options)
        finally:
            with self._lock:
                self.running -= 1


class RefusingIO(TorchCheckpointIO):
    """Refuses to write paths containing ``refuse`` (like a storage backend rejecting an upload)."""

    def __init__(self, refuse: str) -> None:
        self.refuse = refuse

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if self.refuse in os.fspath(path):
            raise RuntimeError("the storage backend rejected the upload")
        super().save_checkpoint(checkpoint, path, storage_options)


def _state(value: float) -> dict[str, Any]:
    return {"state_dict": {"w": torch.full((64, 64), value), "b": torch.full((64,), value)}, "global_step": int(value)}


def test_save_returns_before_the_file_exists_and_the_file_holds_the_values_at_the_call(tmp_path: Path) -> None:
    gated = GatedIO()
    io = AsyncCheckpointIO(gated)
    state = _state(1.0)
    target = tmp_path / "a.ckpt"
    io.save_checkpoint(state, target)
    assert gated.started.wait(10)
    assert not target.exists()
    state["state_dict"]["w"].add_(100.0)  # training goes on changing the parameters in place
    state["global_step"] = 99
    gated.gate.set()
    io.wait()
    loaded = _load(target)
    assert torch.equal(loaded["state_dict"]["w"], torch.full((64, 64), 1.0))
    assert loaded["global_step"] == 1
    io.teardown()


def test_the_file_is_byte_identical_to_a_synchronous_save_and_keeps_shared_storages(tmp_path: Path) -> None:
    base = torch.arange(20.0).reshape(4, 5)
    state_dict: OrderedDict[str, torch.Tensor] = OrderedDict(weight=base, row=base[2], tied=base)
    state_dict._metadata = {"": {"version": 1}}  # type: ignore[attr-defined]
    checkpoint = {
        "state_dict": state_dict,
        "param": nn.Parameter(torch.ones(3)),
        "ints": torch.arange(4, dtype=torch.int64)[::2],
        "hyper_parameters": {"lr": 0.1, "layers": [8, 16], "name": "mlp"},
        "rng": (torch.get_rng_state(), 3),
        "epoch": 2,
    }
    TorchCheckpointIO().save_checkpoint(checkpoint, tmp_path / "sync.ckpt")
    io = AsyncCheckpointIO()
    io.save_checkpoint(checkpoint, tmp_path / "async.ckpt")
    io.teardown()
    assert (tmp_path / "async.ckpt").read_bytes() == (tmp_path / "sync.ckpt").read_bytes()
    loaded = _load(tmp_path / "async.ckpt")
    assert loaded["state_dict"]._metadata == {"": {"version": 1}}
    assert loaded["state_dict"]["row"].untyped_storage().data_ptr() == loaded["state_dict"]["weight"].untyped_storage(
    ).data_ptr()
    assert isinstance(loaded["param"], nn.Parameter)


def test_consecutive_saves_reuse_nothing_that_a_later_save_could_overwrite(tmp_path: Path) -> None:
    io = AsyncCheckpointIO()
    state = _state(0.0)
    for i in range(4):
        state["state_dict"]["w"].fill_(float(i))
        io.save_checkpoint(state, tmp_path / f"{i}.ckpt")
    io.teardown()
    for i in range(4):
        assert torch.equal(_load(tmp_path / f"{i}.ckpt")["state_dict"]["w"], torch.full((64, 64), float(i)))


def test_a_save_waits_for_the_one_in_flight(tmp_path: Path) -> None:
    gated = GatedIO()
    io = AsyncCheckpointIO(gated)
    io.save_checkpoint(_state(1.0), tmp_path / "first.ckpt")
    second = threading.Thread(target=io.save_checkpoint, args=(_state(2.0), tmp_path / "second.ckpt"))
    second.start()
    second.join(0.5)
    assert second.is_alive()  # blocked behind the first write
    gated.gate.set()
    second.join(10)
    assert not second.is_alive()
    io.teardown()
    assert gated.most_at_once == 1
    assert _load(tmp_path / "second.ckpt")["global_step"] == 2


def test_the_second_of_two_saves_to_one_path_wins_and_two_paths_both_exist(tmp_path: Path) -> None:
    io = AsyncCheckpointIO()
    io.save_checkpoint(_state(1.0), tmp_path / "same.ckpt")
    io.save_checkpoint(_state(2.0), tmp_path / "same.ckpt")
    io.save_checkpoint(_state(3.0), tmp_path / "other.ckpt")
    io.teardown()
    assert _load(tmp_path / "same.ckpt")["global_step"] == 2
    assert _load(tmp_path / "other.ckpt")["global_step"] == 3
    assert sorted(os.listdir(tmp_path)) == ["other.ckpt", "same.ckpt"]  # no temporary file left


def test_a_removal_runs_after_the_write_in_flight(tmp_path: Path) -> None:
    old = tmp_path / "old.ckpt"
    TorchCheckpointIO().save_checkpoint(_state(0.0), old)
    gated = GatedIO()
    io = AsyncCheckpointIO(gated)
    io.save_checkpoint(_state(1.0), tmp_path / "new.ckpt")
    io.remove_checkpoint(old)
    assert old.exists()  # the only complete checkpoint while the new one is written
    assert io._pending_state(old) is False and io._pending_state(tmp_path / "new.ckpt") is True
    gated.gate.set()
    io.wait()
    assert not old.exists() and (tmp_path / "new.ckpt").exists()
    assert io._pending_state(old) is None
    io.remove_checkpoint(tmp_path / "new.ckpt")  # nothing queued: removed at once
    assert not (tmp_path / "new.ckpt").exists()
    io.teardown()


def test_a_failed_write_keeps_the_file_it_would_have_replaced_and_surfaces_at_the_next_save(tmp_path: Path) -> None:
    old = tmp_path / "old.ckpt"
    TorchCheckpointIO().save_checkpoint(_state(0.0), old)
    io = AsyncCheckpointIO(RefusingIO(refuse="bad"))
    io.save_checkpoint(_state(1.0), tmp_path / "bad.ckpt")  # returns: the write has not run yet
    io.remove_checkpoint(old)  # queued behind the failing write: skipped
    with pytest.raises(RuntimeError, match=r"Writing the checkpoint .*bad\.ckpt in the background failed"
                                           r" \(RuntimeError: the storage backend rejected the upload\)") as info:
        io.save_checkpoint(_state(2.0), tmp_path / "good.ckpt")
    assert isinstance(info.value.__cause__, RuntimeError)
    assert old.exists() and not (tmp_path / "bad.ckpt").exists()
    # raised once; the saves after it work
    io.save_checkpoint(_state(2.0), tmp_path / "good.ckpt")
    io.teardown()
    assert _load(tmp_path / "good.ckpt")["global_step"] == 2


def test_an_os_error_keeps_its_class_and_names_the_file_and_surfaces_at_teardown(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the checkpoint directory should be")
    target = blocker / "model.ckpt"
    io = AsyncCheckpointIO()
    io.save_checkpoint(_state(1.0), target)
    with pytest.raises(OSError, match=r"Could not write the checkpoint .*not-a-directory/model\.ckpt") as info:
        io.teardown()
    assert info.value.errno is not None
    io.teardown()  # the error was raised once


def test_load_waits_for_the_queued_write(tmp_path: Path) -> None:
    gated = GatedIO()
    io = AsyncCheckpointIO(gated)
    io.save_checkpoint(_state(5.0), tmp_path / "a.ckpt")
    threading.Timer(0.3, gated.gate.set).start()
    assert io.load_checkpoint(tmp_path / "a.ckpt")["global_step"] == 5
    io.teardown()


def test_after_teardown_saves_are_synchronous_until_the_next_run(tmp_path: Path) -> None:
    gated = GatedIO()
    gated.gate.set()
    io = AsyncCheckpointIO(gated)
    io.teardown()
    io.save_checkpoint(_state(1.0), tmp_path / "a.ckpt")
    assert (tmp_path / "a.ckpt").exists()  # complete when the call returns
    io._start()
    gated.gate.clear()
    io.save_checkpoint(_state(2.0), tmp_path / "b.ckpt")
    assert not (tmp_path / "b.ckpt").exists()
    gated.gate.set()
    io.teardown()
    assert (tmp_path / "b.ckpt").exists()


def test_a_pickled_or_copied_plugin_starts_idle_and_works(tmp_path: Path) -> None:
    io = AsyncCheckpointIO()
    io.save_checkpoint(_state(1.0), tmp_path / "a.ckpt")
    for clone in (pickle.loads(pickle.dumps(io)), copy.deepcopy(io)):
        clone.save_checkpoint(_state(2.0), tmp_path / "b.ckpt")
        clone.teardown()
        assert _load(tmp_path / "b.ckpt")["global_step"] == 2
    io.teardown()


def test_storage_options_are_refused_at_the_call_with_the_default_writer(tmp_path: Path) -> None:
    io = AsyncCheckpointIO()
    with pytest.raises(TypeError, match="storage_options"):
        io.save_checkpoint(_state(1.0), tmp_path / "a.ckpt", storage_options={"x": 1})
    io.teardown()


@pytest.mark.parametrize("wrapped", ["not a plugin", AsyncCheckpointIO()])
def test_bad_wrapped_plugins_are_refused_with_the_fix(wrapped: Any) -> None:
    with pytest.raises(TypeError, match=r"AsyncCheckpointIO\(checkpoint_io=...\)"):
        AsyncCheckpointIO(wrapped)


def test_wait_helper_is_a_no_op_for_a_synchronous_plugin(tmp_path: Path) -> None:
    wait_for_checkpoint_writes(TorchCheckpointIO())
    io = AsyncCheckpointIO()
    io.save_checkpoint(_state(1.0), tmp_path / "a.ckpt")
    wait_for_checkpoint_writes(io)
    assert (tmp_path / "a.ckpt").exists()
    io.teardown()


def test_trainer_plugin_wraps_the_strategy_writer() -> None:
    class Named(TorchCheckpointIO):
        pass

    plugin = AsyncCheckpointIO()
    trainer = pl.Trainer(plugins=[plugin], logger=False, max_epochs=1)
    assert trainer.strategy.checkpoint_io is plugin
    assert type(plugin.checkpoint_io) is TorchCheckpointIO

    inner = Named()
    strategy = SingleDeviceStrategy(device="cpu", checkpoint_io=inner)
    plugin = AsyncCheckpointIO()
    trainer = pl.Trainer(strategy=strategy, plugins=[plugin], logger=False, max_epochs=1)
    assert trainer.strategy.checkpoint_io is plugin and plugin.checkpoint_io is inner
    explicit: CheckpointIO = TorchCheckpointIO()
    assert AsyncCheckpointIO(explicit).checkpoint_io is explicit


def test_the_writer_thread_ends_at_teardown(tmp_path: Path) -> None:
    io = AsyncCheckpointIO()
    io.save_checkpoint(_state(1.0), tmp_path / "a.ckpt")
    io.teardown()
    deadline = time.monotonic() + 5
    while any(t.name.startswith("torchbolt-checkpoint-writer") for t in threading.enumerate()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
