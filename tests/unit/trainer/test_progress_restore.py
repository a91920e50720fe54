"""Counters restored from a checkpoint are checked before they are used."""

from __future__ import annotations

import pytest

from torchbolt.trainer.states import Progress


def test_restore_accepts_what_state_dict_wrote() -> None:
    p = Progress(current_epoch=3, global_step=40, total_batch_idx=39, epoch_started=True)
    q = Progress()
    q.restore(p.state_dict())
    assert q == p


@pytest.mark.parametrize(("key", "value"), [
    ("current_epoch", -5), ("global_step", -1), ("batches_that_stepped", -2), ("total_batch_idx", -2),
    ("current_epoch", "3"), ("global_step", 2.0), ("global_step", True), ("epoch_started", 1), ("extra", [1]),
])
def test_bad_values_raise_naming_the_key_and_change_nothing(key: str, value: object) -> None:
    p = Progress(current_epoch=2)
    with pytest.raises(ValueError, match=repr(key)):
        p.restore({"current_epoch": 7, key: value}, source="'x.ckpt'")
    assert p.current_epoch == 2  # nothing was applied


def test_keys_that_are_not_counters_are_never_set() -> None:
    p = Progress()
    p.restore({"restore": 1, "state_dict": 2, "__class__": 3, "global_step": 5})
    assert callable(p.restore) and callable(p.state_dict) and type(p) is Progress
    assert p.global_step == 5


def test_counters_advance_through_methods() -> None:
    p = Progress()
    p.open_epoch()
    p.epoch_opened()
    p.begin_batch(0)
    p.optimizer_stepped()
    p.batch_trained(0, is_last=True)
    assert p.in_batch_tail and p.last_batch_seen and p.epoch_batches_done == 1
    p.finish_batch(stepped=True)
    p.advance_epoch()
    assert (p.current_epoch, p.global_step, p.batches_that_stepped, p.total_batch_idx) == (1, 1, 1, 0)
    assert not (p.in_batch_tail or p.epoch_started or p.epoch_batches_done)
