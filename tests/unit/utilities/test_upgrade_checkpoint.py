"""`python -m torchbolt.utilities.upgrade_checkpoint` on crafted Lightning 0.x / 1.x checkpoints."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torchbolt.callbacks import EarlyStopping, ModelCheckpoint


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torchbolt.utilities.upgrade_checkpoint", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_lightning_0_9_checkpoint_is_rewritten_with_a_backup(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    old = {"epoch": 3, "global_step": 40, "pytorch-lightning_version": "0.9.0", "state_dict": {"w": torch.ones(2)},
           "checkpoint_callback_best_model_score": 0.25, "checkpoint_callback_best_model_path": "epoch=2.ckpt",
           "early_stop_callback_wait": 1, "early_stop_callback_patience": 3, "hparams": {"lr": 0.1}}
    path = tmp_path / "run" / "old.ckpt"
    path.parent.mkdir()
    torch.save(old, path)

    proc = _run(str(tmp_path / "run"), env=subprocess_env)
    assert proc.returncode == 0, proc.stderr
    assert "upgraded" in proc.stdout

    assert torch.load(path.with_name("old.ckpt.bak"), weights_only=True).keys() == old.keys()  # the original
    new = torch.load(path, weights_only=True)
    assert new["pytorch-lightning_version"] == "2.0.0"
    assert new["callbacks"][str(ModelCheckpoint)] == {"best_model_score": 0.25, "best_model_path": "epoch=2.ckpt"}
    assert new["callbacks"][str(EarlyStopping)] == {"wait_count": 1, "patience": 3}
    assert new["hyper_parameters"] == {"lr": 0.1} and "hparams" not in new
    fit_loop = new["loops"]["fit_loop"]
    assert fit_loop["epoch_loop.state_dict"] == {"_batches_that_stepped": 40}
    assert fit_loop["epoch_progress"]["current"]["completed"] == 3
    assert torch.equal(new["state_dict"]["w"], torch.ones(2))

    again = _run(str(path), env=subprocess_env)  # a current checkpoint is left as it is
    assert again.returncode == 0 and "already current" in again.stdout


def test_lightning_1_x_loop_entries_move_to_the_2_0_layout(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    progress = {"total": {"ready": 5, "completed": 5}, "current": {"ready": 5, "completed": 5}}
    old = {"epoch": 0, "global_step": 5, "pytorch-lightning_version": "1.8.6", "state_dict": {},
           "loops": {"fit_loop": {"epoch_loop.batch_loop.optimizer_loop.optim_progress": {"optimizer": {"step": progress}},
                                  "epoch_loop.batch_loop.state_dict": {},
                                  "epoch_loop.val_loop.dataloader_progress": {}},
                     "validate_loop": {"epoch_loop.batch_progress": progress, "dataloader_progress": {}}}}
    path = tmp_path / "v1.model"
    torch.save(old, path)
    proc = _run(str(tmp_path), "--extension", ".model", "--map-to-cpu", env=subprocess_env)
    assert proc.returncode == 0, proc.stderr
    loops = torch.load(path, weights_only=True)["loops"]
    assert loops["fit_loop"] == {"epoch_loop.automatic_optimization.optim_progress": {"optimizer": {"step": progress}}}
    assert loops["validate_loop"] == {"batch_progress": progress}


def test_a_folder_without_checkpoints_is_an_error(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    proc = _run(str(tmp_path), env=subprocess_env)
    assert proc.returncode == 2 and "--extension" in proc.stderr


def test_a_missing_path_exits_with_status_2_and_logs_why(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from torchbolt.utilities.upgrade_checkpoint import main

    missing = tmp_path / "checkpoint.ckpt"
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_info:
        main([str(missing)])
    assert exit_info.value.code == 2 and f"The path {missing} does not exist" in caplog.text
    caplog.clear()
    missing.touch()
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit):
        main([str(tmp_path), "--extension", ".other"])
    assert "No checkpoint files with extension .other were found" in caplog.text
