"""Interrupted 2-rank jobs resume exactly: after a SIGKILL (from the last checkpoint) and after the
requeue signal (SIGUSR1) under a simulated SLURM job, which saves a checkpoint, calls `scontrol requeue`
and resumes by itself when started again."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from _launch import free_port, python, read_results_safe, run, script_env, start, stop_group


def _wait_for_step(out: Path, procs: list[subprocess.Popen], step: int, timeout: float = 150) -> list[int]:
    """Wait until every rank reported ``step``; returns their pids."""
    deadline = time.monotonic() + timeout
    while True:
        markers = [out / f"step.rank{r}" for r in range(2)]
        texts = [m.read_text().split() if m.exists() else [] for m in markers]
        if all(len(t) == 2 and int(t[0]) >= step for t in texts):
            return [int(t[1]) for t in texts]
        for p in procs:
            assert p.poll() is None, f"the job ended early:\n{p.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, "the job did not reach the interruption point"
        time.sleep(0.1)


def _assert_identical(out: Path) -> None:
    reference = read_results_safe(out / "ref", "final")
    resumed = read_results_safe(out / "run", "final")
    for ref, res in zip(reference, resumed):
        assert res["step"] == ref["step"] == 16
        assert res["final"] == ref["final"], "resumed weights differ from the uninterrupted run"


def test_ddp_resume_after_sigkill_is_identical_to_an_uninterrupted_run(tmp_path: Path) -> None:
    env = script_env(CKPT_EVERY_STEP=1)
    proc = start(python("resume_job.py", tmp_path, "first"), env=env)
    try:
        pids = _wait_for_step(tmp_path, [proc], step=5)
        os.kill(pids[1], signal.SIGKILL)
        proc.communicate(timeout=60)
        assert proc.returncode != 0
    finally:
        stop_group(proc)
    checkpoint = tmp_path / "run" / "last.ckpt"
    assert checkpoint.is_file()
    run(python("resume_job.py", tmp_path, "again"), env=script_env(CKPT_PATH=checkpoint), timeout=180)
    _assert_identical(tmp_path)


def _fake_slurm(tmp_path: Path, rank: int, port: int, **extra: object) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path}/scontrol.log"\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    return script_env(
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", SLURM_NTASKS=2, SLURM_NTASKS_PER_NODE=2, SLURM_NNODES=1,
        SLURM_PROCID=rank, SLURM_LOCALID=rank, SLURM_NODEID=0, SLURM_JOB_ID=4242, SLURM_JOB_NAME="train",
        SLURM_NODELIST="localhost", MASTER_ADDR="127.0.0.1", MASTER_PORT=port, **extra,
    )


def _srun(tmp_path: Path, mode: str, **extra: object) -> list[subprocess.Popen]:
    port = free_port()
    return [start(python("resume_job.py", tmp_path, mode), env=_fake_slurm(tmp_path, rank, port, **extra))
            for rank in (0, 1)]


@pytest.mark.parametrize("writes", ["synchronous", "background"])
def test_sigusr1_on_one_slurm_rank_checkpoints_requeues_and_the_requeued_job_resumes_exactly(tmp_path: Path,
                                                                                            writes: str) -> None:
    # "background": `AsyncCheckpointIO`; the requeue checkpoint must be complete before `scontrol requeue`
    procs = _srun(tmp_path, "first", ASYNC_CKPT=int(writes == "background"))
    try:
        pids = _wait_for_step(tmp_path, procs, step=3)
        os.kill(pids[1], signal.SIGUSR1)  # only one rank gets it: both must stop at the same step
        for p in procs:
            p.communicate(timeout=90)
        assert [p.returncode for p in procs] == [0, 0]
    finally:
        for p in procs:
            stop_group(p)
    checkpoint = tmp_path / "run" / "hpc_ckpt_1.ckpt"
    assert checkpoint.is_file()
    assert (tmp_path / "scontrol.log").read_text().split("\n")[0] == "requeue 4242"
    saved = __import__("torch").load(checkpoint, weights_only=True)
    assert 3 <= saved["global_step"] < 16
    # the requeued job: the same command, no ckpt_path; it finds the checkpoint by itself
    procs = _srun(tmp_path, "again")
    try:
        outputs = [p.communicate(timeout=150) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outputs]
    finally:
        for p in procs:
            stop_group(p)
    _assert_identical(tmp_path)
