"""Self-healing runs, in one process: the worker environment torchrun sets (restart count, run id) decides
whether `fit()` without `ckpt_path` resumes, and from which checkpoint. (The 2-rank torchrun run with a
real SIGKILL and restart is in tests/distributed/test_torchrun_restarts.py.)"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import torchbolt as pl
from torchbolt.callbacks import ModelCheckpoint
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.loggers import CSVLogger
from torchbolt.plugins.environments import TorchElasticEnvironment
from torchbolt.strategies import SingleDeviceStrategy
from torchbolt.trainer import elastic_resume


@pytest.fixture(autouse=True)
def _torchrun_worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The variables torchrun gives a worker of a 1-process job started with `--max-restarts=3`."""
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "GROUP_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                       "TORCHELASTIC_RESTART_COUNT": "0", "TORCHELASTIC_MAX_RESTARTS": "3",
                       "TORCHELASTIC_RUN_ID": "job-1"}.items():
        monkeypatch.setenv(key, value)
    # every test is a new process as far as the run records go
    monkeypatch.setattr(elastic_resume, "_FIT_CALLS", {})
    yield


def _attempt(monkeypatch: pytest.MonkeyPatch, restart: int, run_id: str = "job-1") -> None:
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", str(restart))
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", run_id)
    # a restarted worker is a new process
    monkeypatch.setattr(elastic_resume, "_FIT_CALLS", {})


class _FailAt(pl.Callback):
    def __init__(self, step: int | None) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("worker lost")


def _fit(root: Path, fail_at: int | None = None, plugins: Any = None, ckpt_path: str | None = None,
         max_steps: int = 6, dirpath: Path | None = None) -> pl.Trainer:
    trainer = pl.Trainer(
        accelerator="cpu", strategy=SingleDeviceStrategy(torch.device("cpu")), max_steps=max_steps,
        limit_val_batches=0, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root, plugins=plugins,
        callbacks=[ModelCheckpoint(dirpath=dirpath or root / "ckpts", every_n_train_steps=2, save_last=True), _FailAt(fail_at)],
    )
    model = BoringModel()
    if fail_at is None:
        trainer.fit(model, ckpt_path=ckpt_path)
    else:
        with pytest.raises(RuntimeError, match="worker lost"):
            trainer.fit(model, ckpt_path=ckpt_path)
    return trainer


def test_a_restarted_attempt_resumes_from_the_newest_checkpoint_of_the_run(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    first = _fit(tmp_path, fail_at=5)
    assert first.ckpt_path is None
    record = json.loads((tmp_path / elastic_resume.RECORD_NAME).read_text())
    assert record["run_id"] == "job-1" and record["fit_calls"] == [[str(tmp_path / "ckpts")]]
    _attempt(monkeypatch, restart=1)
    again = _fit(tmp_path)
    assert again.ckpt_path == str(tmp_path / "ckpts" / "last.ckpt")
    assert again.global_step == 6


def test_a_first_attempt_never_resumes_checkpoints_left_by_an_earlier_job(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _fit(tmp_path)  # an earlier job with the same directories and run id, finished
    assert (tmp_path / "ckpts" / "last.ckpt").is_file()
    _attempt(monkeypatch, restart=0)
    fresh = _fit(tmp_path, max_steps=2)
    assert fresh.ckpt_path is None and fresh.global_step == 2


def test_a_restart_before_the_runs_first_checkpoint_starts_over_instead_of_resuming_an_older_job(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fit(tmp_path)  # an earlier job's last.ckpt (step 6)
    time.sleep(0.05)  # the filesystem's clock has to tell the files apart
    _attempt(monkeypatch, restart=0)
    _fit(tmp_path, fail_at=1)  # this run's first attempt dies before it wrote a checkpoint
    _attempt(monkeypatch, restart=1)
    again = _fit(tmp_path)
    assert again.ckpt_path is None


def test_a_record_of_another_run_is_not_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fit(tmp_path, fail_at=5)
    _attempt(monkeypatch, restart=1, run_id="job-2")
    other = _fit(tmp_path)
    assert other.ckpt_path is None
    assert json.loads((tmp_path / elastic_resume.RECORD_NAME).read_text())["run_id"] == "job-2"


def test_auto_resume_false_turns_it_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fit(tmp_path, fail_at=5, plugins=[TorchElasticEnvironment(auto_resume=False)])
    _attempt(monkeypatch, restart=1)
    again = _fit(tmp_path, plugins=[TorchElasticEnvironment(auto_resume=False)])
    assert again.ckpt_path is None
    assert not (tmp_path / elastic_resume.RECORD_NAME).exists()


def test_an_explicit_ckpt_path_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fit(tmp_path, fail_at=5)
    shutil.copyfile(tmp_path / "ckpts" / "last.ckpt", tmp_path / "chosen.ckpt")
    _attempt(monkeypatch, restart=1)
    again = _fit(tmp_path, ckpt_path=str(tmp_path / "chosen.ckpt"))
    assert again.ckpt_path == str(tmp_path / "chosen.ckpt")


def test_without_restarts_nothing_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "0")
    _fit(tmp_path, max_steps=2)
    assert not (tmp_path / elastic_resume.RECORD_NAME).exists()


def test_auto_resume_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="auto_resume"):
        TorchElasticEnvironment(auto_resume="yes")  # type: ignore[arg-type]


def test_a_root_dir_where_the_record_cannot_be_written_warns_and_trains(tmp_path: Path) -> None:
    # a directory in the record's place: writing it fails as a read-only directory would, even as root
    (tmp_path / elastic_resume.RECORD_NAME).mkdir()
    with pytest.warns(UserWarning, match="Self-healing is off for this torchrun run"):
        trainer = _fit(tmp_path, max_steps=2)
    assert trainer.global_step == 2


def test_a_restart_finds_the_checkpoints_of_the_earlier_attempts_logger_version(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # ModelCheckpoint's default directory is <logger>/version_<n>/checkpoints, and <n> grows with each attempt
    def fit(fail_at: int | None) -> pl.Trainer:
        trainer = pl.Trainer(
            accelerator="cpu", strategy=SingleDeviceStrategy(torch.device("cpu")), max_steps=6, limit_val_batches=0,
            logger=CSVLogger(tmp_path), enable_progress_bar=False, enable_model_summary=False,
            default_root_dir=tmp_path, callbacks=[ModelCheckpoint(every_n_train_steps=2, save_last=True),
                                                  _FailAt(fail_at)],
        )
        if fail_at is None:
            trainer.fit(BoringModel())
        else:
            with pytest.raises(RuntimeError, match="worker lost"):
                trainer.fit(BoringModel())
        return trainer

    fit(fail_at=5)
    _attempt(monkeypatch, restart=1)
    again = fit(fail_at=None)
    assert again.ckpt_path == str(tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt")
    assert again.checkpoint_callback.dirpath == str(tmp_path / "lightning_logs" / "version_1" / "checkpoints")


def test_each_fit_call_of_a_script_resumes_from_its_own_checkpoints(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # a script with two `fit` calls under one default_root_dir: the first finished, the second died
    def attempt(fail_second: bool) -> tuple[pl.Trainer, pl.Trainer]:
        trainers = []
        for stage, fail_at in (("stage1", None), ("stage2", 3 if fail_second else None)):
            trainers.append(_fit(tmp_path, fail_at=fail_at, dirpath=tmp_path / stage))
        return trainers[0], trainers[1]

    attempt(fail_second=True)
    _attempt(monkeypatch, restart=1)
    first, second = attempt(fail_second=False)
    # the finished call resumes from its final checkpoint (nothing left to train), the other from its own
    assert first.ckpt_path == str(tmp_path / "stage1" / "last.ckpt") and first.global_step == 6
    assert second.ckpt_path == str(tmp_path / "stage2" / "last.ckpt") and second.global_step == 6
    record = json.loads((tmp_path / elastic_resume.RECORD_NAME).read_text())
    assert record["fit_calls"] == [[str(tmp_path / "stage1")], [str(tmp_path / "stage2")]]
