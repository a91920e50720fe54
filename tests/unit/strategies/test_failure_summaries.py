"""Failure summaries: which rank's error a multi-process run names last (real files, real exceptions)."""

from __future__ import annotations

import os
from pathlib import Path

from torch.multiprocessing import ProcessRaisedException

from torchbolt.strategies.launchers._failures import (
    first_failure,
    is_reaction_to_peer_failure,
    latest_first_failure,
    read_failures,
    record_failure,
    wait_for_first_failure,
)
from torchbolt.strategies.launchers.multiprocessing import _name_first_failure

GLOO_PEER_ERROR = (
    "[../third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:50869. This is"
    " typically caused by a remote worker crashing."
)


def _raised(exception: BaseException) -> BaseException:
    """``exception`` with a traceback, as a rank's launcher sees it."""
    try:
        raise exception
    except BaseException as caught:
        return caught


def test_the_original_error_is_first_even_when_the_peers_reaction_was_recorded_earlier(tmp_path: Path) -> None:
    # rank 0 happens to record its "Connection closed by peer" before rank 1 records the error that caused it
    record_failure(str(tmp_path), 0, _raised(RuntimeError(GLOO_PEER_ERROR)), launch=1)
    record_failure(str(tmp_path), 1, _raised(ValueError("boom from rank 1\nsecond line")), launch=1)
    first = first_failure(read_failures(str(tmp_path), launch=1))
    assert first is not None and first.rank == 1 and not first.reaction
    assert first.last_line() == (
        "[torchbolt] rank 1 failed first, with ValueError: boom from rank 1; its traceback is printed above."
    )
    assert 'raise exception' in first.traceback  # the whole traceback travels with the summary


def test_only_the_failures_of_the_same_launch_are_compared(tmp_path: Path) -> None:
    # a failure the script caught in an earlier fit must not be named for a later one
    record_failure(str(tmp_path), 1, _raised(ValueError("handled earlier")), launch=1)
    record_failure(str(tmp_path), 0, _raised(KeyError("now")), launch=2)
    assert [f.message for f in read_failures(str(tmp_path), launch=2)] == ["'now'"]
    latest = latest_first_failure(str(tmp_path))
    assert latest is not None and latest.rank == 0 and latest.launch == 2


def test_graceful_stops_are_not_failures(tmp_path: Path) -> None:
    assert record_failure(str(tmp_path), 0, _raised(KeyboardInterrupt()), launch=1) is None
    assert record_failure(str(tmp_path), 0, _raised(SystemExit(0)), launch=1) is None
    assert read_failures(str(tmp_path)) == []


def test_transport_errors_and_timeouts_count_as_reactions() -> None:
    assert is_reaction_to_peer_failure(RuntimeError(GLOO_PEER_ERROR))
    assert is_reaction_to_peer_failure(RuntimeError("Connection reset by peer"))
    assert is_reaction_to_peer_failure(RuntimeError("[gloo] Timed out waiting 300000ms for recv operation"))
    assert not is_reaction_to_peer_failure(ValueError("boom from rank 1"))


def test_a_reacting_rank_stops_waiting_once_its_peers_are_gone(tmp_path: Path) -> None:
    # a peer killed by SIGKILL writes nothing: the wait ends as soon as the peers have exited
    own = record_failure(str(tmp_path), 0, _raised(RuntimeError(GLOO_PEER_ERROR)), launch=1)
    first = wait_for_first_failure(str(tmp_path), 1, own, peers_gone=lambda: True, timeout=60)
    assert first == own


def test_an_unwritable_directory_does_not_hide_the_error(tmp_path: Path) -> None:
    missing = tmp_path / "removed"
    assert record_failure(str(missing), 1, _raised(ValueError("boom")), launch=1) is None


def test_spawn_note_carries_the_first_failures_traceback_when_torch_reported_another_process(tmp_path: Path) -> None:
    record_failure(str(tmp_path), 1, _raised(ValueError("boom from rank 1")), launch=0)
    record_failure(str(tmp_path), 0, _raised(RuntimeError(GLOO_PEER_ERROR)), launch=0)
    # torch.multiprocessing reported process 0, whose error was only the reaction
    reported = ProcessRaisedException(f"\n\n-- Process 0 terminated with the following error:\n{GLOO_PEER_ERROR}",
                                      0, os.getpid())
    _name_first_failure(reported, str(tmp_path), rank_offset=0)
    notes = reported.__notes__
    assert notes[0].startswith("Rank 1 failed first:\nTraceback") and "ValueError: boom from rank 1" in notes[0]
    assert notes[-1] == (
        "[torchbolt] rank 1 failed first, with ValueError: boom from rank 1; its traceback is printed above."
    )


def test_spawn_note_is_one_line_when_torch_reported_the_first_failure(tmp_path: Path) -> None:
    record_failure(str(tmp_path), 1, _raised(ValueError("boom from rank 1")), launch=0)
    reported = ProcessRaisedException("Process 1 ... ValueError: boom from rank 1", 1, os.getpid())
    _name_first_failure(reported, str(tmp_path), rank_offset=0)
    assert reported.__notes__ == [
        "[torchbolt] rank 1 failed first, with ValueError: boom from rank 1; its traceback is printed above."
    ]
