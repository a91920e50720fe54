"""A failing rank ends the whole job quickly, with the original error; uneven data never deadlocks."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from _launch import python, read_results_safe, run, script_env, start, stop_group

_DEADLINE_S = 60


def _wait_for(paths: list[Path], proc, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not all(p.exists() and p.read_text() for p in paths):
        assert proc.poll() is None, f"the job ended early:\n{proc.communicate()[1]}"
        assert time.monotonic() < deadline, "the job did not reach the kill point"
        time.sleep(0.2)


def _last_line(output: str) -> str:
    return [line for line in output.splitlines() if line.strip()][-1]


@pytest.mark.parametrize("mode", ["raise", "raise_spawn"])
def test_a_rank_raising_ends_the_job_with_its_error(tmp_path: Path, mode: str) -> None:
    # rank 1 raises ValueError at its third training step; rank 0 then fails in the gradient all-reduce
    # ("Connection closed by peer"), but the output must end naming rank 1 and its error
    started = time.monotonic()
    proc = run(python("failures.py", tmp_path, mode), env=script_env(), check=False, timeout=_DEADLINE_S + 60)
    assert proc.returncode != 0
    assert 'raise ValueError("boom from rank 1")' in proc.stderr  # rank 1's own traceback is there too
    last = _last_line(proc.stderr)
    assert "rank 1 failed first" in last and "ValueError: boom from rank 1" in last, proc.stderr[-3000:]
    assert time.monotonic() - started < _DEADLINE_S + 30


def _kill_rank_and_wait(tmp_path: Path, rank: int) -> tuple[int, str, float]:
    proc = start(python("failures.py", tmp_path, "wait_for_kill"), env=script_env())
    try:
        pid_files = [tmp_path / "pid.rank0", tmp_path / "pid.rank1"]
        _wait_for(pid_files, proc)
        victim = int(pid_files[rank].read_text())
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        try:
            _, stderr = proc.communicate(timeout=_DEADLINE_S)
        except Exception:
            stop_group(proc)
            raise AssertionError(f"the job was still running {_DEADLINE_S} s after rank {rank} was killed") from None
        return proc.returncode, stderr, time.monotonic() - killed_at
    finally:
        stop_group(proc)


def test_killing_a_child_rank_ends_the_job_with_an_error_within_60_s(tmp_path: Path) -> None:
    code, stderr, elapsed = _kill_rank_and_wait(tmp_path, rank=1)
    assert code != 0
    assert elapsed < _DEADLINE_S
    assert "SIGKILL" in stderr or "Connection" in stderr or "closed" in stderr, stderr[-2000:]


def test_killing_the_main_rank_ends_the_other_ranks_within_60_s(tmp_path: Path) -> None:
    code, _, elapsed = _kill_rank_and_wait(tmp_path, rank=0)
    assert code == -signal.SIGKILL
    assert elapsed < _DEADLINE_S
    # the child has gone too (its process group is checked by stop_group; here: no pid left alive)
    child = int((tmp_path / "pid.rank1").read_text())
    deadline = time.monotonic() + _DEADLINE_S
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(child), "rank 1 kept running after rank 0 was killed"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def uneven_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uneven")
    run(python("failures.py", out, "uneven"), env=script_env(), timeout=180)
    return out


def test_uneven_batch_counts_raise_a_clear_error_on_every_rank_instead_of_hanging(uneven_out: Path) -> None:
    for result in read_results_safe(uneven_out, "uneven"):
        assert "different numbers of batches on different ranks" in result["error"]
        assert "rank 0: 4, rank 1: 3" in result["error"]


def test_uneven_data_without_a_length_stops_every_rank_together(uneven_out: Path) -> None:
    rank0, rank1 = read_results_safe(uneven_out, "uneven")
    # rank 1 has 3 batches, so both ranks stop after 3 optimizer steps
    assert rank0["global_step"] == rank1["global_step"] == 3
    assert len(rank0["seen"][0]) == len(rank1["seen"][0]) == 6
