"""Interrupted 2-rank jobs resume exactly: after a SIGKILL (from the last checkpoint) and after the
requeue signal (SIGUSR1) under a simulated SLURM job, which saves a checkpoint, calls `scontrol requeue`
and resumes by itself when started again."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
import torch
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



@pytest.fixture(scope="module")
def rank_rng_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-rank job whose ranks draw different random numbers (dropout, augmentation) and that logs a
    torchmetrics mean on epoch: an uninterrupted reference, then the same job SIGKILLed mid-epoch 0
    (after the checkpoint of step 3, kept as ``killed-last.ckpt``) and resumed with ``ckpt_path="last"``."""
    pytest.importorskip("torchmetrics")
    out = tmp_path_factory.mktemp("rank-rng")
    proc = start(python("rank_rng_resume_job.py", out, "first"), env=script_env(KILL_AT_STEP=5))
    try:
        _, err = proc.communicate(timeout=200)
        assert proc.returncode == -signal.SIGKILL, err[-3000:]
    finally:
        stop_group(proc)
    shutil.copyfile(out / "run" / "ckpts" / "last.ckpt", out / "killed-last.ckpt")
    run(python("rank_rng_resume_job.py", out, "again"), env=script_env(), timeout=200)
    return out


def test_ddp_checkpoint_holds_every_ranks_random_and_metric_state(rank_rng_job: Path) -> None:
    saved = torch.load(rank_rng_job / "killed-last.ckpt", weights_only=True)
    assert saved["global_step"] == 3  # mid-epoch 0 (8 steps per epoch)
    state = saved["loops"]["fit_loop"]["torchbolt"]
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    # the ranks' streams differ, so the file must hold both
    assert not torch.equal(state["ranks"][0]["rng"]["torch"], state["ranks"][1]["rng"]["torch"])
    counts = [rank["metric_states"]["loss_mean"]["update_count"] for rank in state["ranks"]]
    assert counts == [3, 3]


def test_ddp_run_with_rank_dependent_randomness_killed_mid_epoch_resumes_bit_exactly(rank_rng_job: Path) -> None:
    reference = read_results_safe(rank_rng_job / "ref", "final")
    resumed = read_results_safe(rank_rng_job / "run", "final")
    for ref, res in zip(reference, resumed):
        assert res["ckpt_path"] == str(rank_rng_job / "run" / "ckpts" / "last.ckpt")
        assert res["step"] == ref["step"] == 16
        assert res["final"] == ref["final"], "resumed weights differ from the uninterrupted run"
        # the torchmetrics mean (synchronized over the ranks) and a sync_dist mean, per finished epoch
        assert res["epochs"] == ref["epochs"], "epoch-level metrics differ from the uninterrupted run"


def test_a_ddp_checkpoint_resumed_by_one_process_warns_that_it_is_not_exact(rank_rng_job: Path) -> None:
    done = run(python("rank_rng_resume_job.py", rank_rng_job, "one-process"),
               env=script_env(CKPT_PATH=rank_rng_job / "killed-last.ckpt"), timeout=200)
    assert "written by 2 process(es) and is resumed by 1" in done.stderr



@pytest.mark.parametrize("loader", ["stateful", "iterable"])
def test_ddp_run_with_a_loader_that_keeps_its_own_position_resumes_bit_exactly(tmp_path: Path, loader: str) -> None:
    """The same job with torchdata's ``StatefulDataLoader`` (a ``DistributedSampler`` per rank), or with a
    ``DataLoader`` over an ``IterableDataset`` that has ``state_dict``/``load_state_dict`` (one shard per rank,
    no length): each rank's loader is positioned by its own saved state, not by replaying the epoch."""
    pytest.importorskip("torchmetrics")
    if loader == "stateful":
        pytest.importorskip("torchdata.stateful_dataloader")
    proc = start(python("rank_rng_resume_job.py", tmp_path, "first"), env=script_env(KILL_AT_STEP=5, LOADER=loader))
    try:
        _, err = proc.communicate(timeout=200)
        assert proc.returncode == -signal.SIGKILL, err[-3000:]
    finally:
        stop_group(proc)
    state = torch.load(tmp_path / "run" / "ckpts" / "last.ckpt", weights_only=True)["loops"]["fit_loop"]["torchbolt"]
    positions = [rank["loader_states"][0] for rank in state["ranks"]]
    if loader == "stateful":
        assert [p["_num_yielded"] for p in positions] == [3, 3]
    else:  # 3 batches of 2 trained on each rank, from different shards
        assert [p["position"] for p in positions] == [6, 6] and positions[0]["order"] != positions[1]["order"]
    run(python("rank_rng_resume_job.py", tmp_path, "again"), env=script_env(LOADER=loader), timeout=200)
    for ref, res in zip(read_results_safe(tmp_path / "ref", "final"), read_results_safe(tmp_path / "run", "final")):
        assert res["step"] == ref["step"] == 16
        assert res["final"] == ref["final"], "resumed weights differ from the uninterrupted run"
        assert res["epochs"] == ref["epochs"], "epoch-level metrics differ from the uninterrupted run"
