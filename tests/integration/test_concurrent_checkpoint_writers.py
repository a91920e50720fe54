"""Several writers in one checkpoint folder: nobody removes a temporary file another live process still writes.

Every atomic write goes through a temporary file next to its target. These tests use real
processes: a live writer's temporary file survives ``ModelCheckpoint.setup`` and saves, a dead
writer's is removed by the next save, ``SIGKILL``s landing in the middle of ``trainer.save_checkpoint``
leave nothing behind after one more save, and two fits sharing a ``dirpath`` both finish.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import torchbolt as pl
from torchbolt.callbacks import ModelCheckpoint
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.utilities import _temp_files
from torchbolt.utilities.cloud_io import TEMP_FILE_PATTERN, _load


class Ballast(BoringModel):
    """A ``BoringModel`` whose checkpoints weigh ``floats * 4`` bytes, so a write takes a while."""

    def __init__(self, floats: int = 1_000_000) -> None:
        super().__init__()
        self.register_buffer("ballast", torch.zeros(floats))


def _fit(dirpath: Path, steps: int = 2, model: BoringModel | None = None) -> pl.Trainer:
    checkpoint = ModelCheckpoint(dirpath=dirpath, every_n_train_steps=1, filename="{step}")
    trainer = pl.Trainer(max_steps=steps, limit_val_batches=0, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[checkpoint])
    trainer.fit(model or BoringModel())
    return trainer


def _temps(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if TEMP_FILE_PATTERN.match(n))


@pytest.fixture
def live_process() -> subprocess.Popen:
    """A real process that stays alive (it sleeps) until the test kills it."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def test_a_live_writers_temp_file_survives_setup_and_saves_then_goes_once_the_writer_is_dead(
        tmp_path: Path, live_process: subprocess.Popen) -> None:
    dirpath = tmp_path / "ck"
    dirpath.mkdir()
    # the temporary file the other process would have while it writes "epoch=0-step=2.ckpt"
    in_flight = dirpath / _temp_files.temp_name("epoch=0-step=2.ckpt", pid=live_process.pid)
    in_flight.write_bytes(b"half a checkpoint")

    trainer = _fit(dirpath)  # ModelCheckpoint.setup, then two saves into the same folder
    trainer.save_checkpoint(dirpath / "manual.ckpt")
    assert in_flight.read_bytes() == b"half a checkpoint"

    live_process.kill()
    live_process.wait()
    trainer.save_checkpoint(dirpath / "manual.ckpt")  # the writer is gone: its file is stale now
    assert not in_flight.exists()
    assert _temps(dirpath) == []


def test_the_next_save_removes_only_temp_files_whose_writer_is_dead_on_this_host(
        tmp_path: Path, live_process: subprocess.Popen) -> None:
    dirpath = tmp_path / "ck"
    dirpath.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    dead_name = _temp_files.temp_name("a.ckpt", pid=dead.pid)  # named while it ran, as its writes are
    dead.kill()
    dead.wait()
    (dirpath / dead_name).write_bytes(b"left by a killed writer")
    # same pid as this process but another start time: an earlier process that had this pid
    own = _temp_files.temp_name("b.ckpt")
    earlier = own.replace(f"-{os.getpid()}-{_temp_files._own_start(os.getpid())}-", f"-{os.getpid()}-1-")
    (dirpath / earlier).write_bytes(b"left by an earlier process with the same pid")
    live = _temp_files.temp_name("c.ckpt", pid=live_process.pid)
    (dirpath / live).write_bytes(b"being written")
    # another machine on a shared filesystem: its pids mean nothing here
    other_host = "0" * 8 if _temp_files._host_id() != "0" * 8 else "1" * 8
    foreign = f".d.ckpt.{other_host}-{dead.pid}-0-{'ab' * 8}.tmp"
    (dirpath / foreign).write_bytes(b"written elsewhere")
    legacy = f".e.ckpt.{'cd' * 16}.tmp"  # older releases: the writer cannot be told
    (dirpath / legacy).write_bytes(b"written by an older release")

    trainer = _fit(tmp_path / "elsewhere", steps=1)
    trainer.save_checkpoint(dirpath / "manual.ckpt")
    assert _temps(dirpath) == sorted([live, foreign, legacy])
    assert _load(dirpath / "manual.ckpt")["global_step"] == 1


def test_killed_manual_saves_leave_no_temp_files_after_the_next_save(tmp_path: Path) -> None:
    trainer = _fit(tmp_path / "fit", steps=1, model=Ballast(4_000_000))  # 16 MB per checkpoint
    dirpath = tmp_path / "manual"
    dirpath.mkdir()
    target = dirpath / "manual.ckpt"
    kills = 0
    deadline = time.monotonic() + 6.0
    while kills < 20 and time.monotonic() < deadline:
        before = set(_temps(dirpath))
        pid = os.fork()
        if pid == 0:  # the writer: saves in a loop until it is killed
            try:
                while True:
                    trainer.save_checkpoint(target)
            finally:
                os._exit(1)
        # kill as soon as a new temporary file shows up (the write is under way), or after a second
        wait_until = time.monotonic() + 1.0
        while time.monotonic() < wait_until and not set(_temps(dirpath)) - before:
            time.sleep(0.0005)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        kills += 1
    assert kills >= 10
    assert _temps(dirpath), "no kill landed in the middle of a write; the drill tested nothing"

    trainer.save_checkpoint(target)
    assert _temps(dirpath) == []
    assert _load(target)["global_step"] == 1


_SHARED_FOLDER_SCRIPT = textwrap.dedent("""
    import os, sys, time
    import torch
    import torchbolt as pl
    from torchbolt.callbacks import ModelCheckpoint
    from torchbolt.demos.boring_classes import BoringModel

    class Ballast(BoringModel):
        def __init__(self):
            super().__init__()
            self.register_buffer("ballast", torch.zeros(2_000_000))  # 8 MB: saving is most of each step

    name, other, dirpath, gate = sys.argv[1:5]
    open(os.path.join(gate, name), "w").close()  # start training together: imports take uneven time
    while not os.path.exists(os.path.join(gate, other)):
        time.sleep(0.01)
    for _ in range(5):  # every fit runs ModelCheckpoint.setup while the other process is saving
        checkpoint = ModelCheckpoint(dirpath=dirpath, filename=name + "-{step}", every_n_train_steps=1)
        trainer = pl.Trainer(max_steps=3, limit_val_batches=0, logger=False, enable_progress_bar=False,
                             enable_model_summary=False, callbacks=[checkpoint])
        trainer.fit(Ballast())
    print("finished", name)
""")


def test_two_fits_saving_into_the_same_dirpath_both_finish(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    script = tmp_path / "shared_folder.py"
    script.write_text(_SHARED_FOLDER_SCRIPT)
    dirpath = tmp_path / "shared"
    gate = tmp_path / "gate"
    gate.mkdir()
    runs = {name: subprocess.Popen([sys.executable, str(script), name, other, str(dirpath), str(gate)],
                                   env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for name, other in (("a", "b"), ("b", "a"))}
    outputs = {name: process.communicate(timeout=120)[0] for name, process in runs.items()}
    for name, process in runs.items():
        assert process.returncode == 0, outputs[name][-3000:]
        assert f"finished {name}" in outputs[name]
    # each fit keeps its newest file (later fits add "-v1"...: the name was taken by the fit before)
    kept = sorted(n for n in os.listdir(dirpath) if n.endswith(".ckpt"))
    assert [n.split("-")[0] for n in kept] == ["a"] * 5 + ["b"] * 5, kept
    assert all(_load(dirpath / n)["global_step"] == 3 for n in kept)
    assert _temps(dirpath) == []
