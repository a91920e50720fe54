"""WandbLogger on the real wandb package, offline, read back from the run's own transaction log."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import pytest
import torch

from torchbolt import Trainer
from torchbolt.callbacks import Checkpoint
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.loggers import WandbLogger

pytest.importorskip("wandb", reason="these tests need the wandb package")


class LoggingModel(BoringModel):
    def __init__(self, lr: float = 0.1, activation: type = torch.nn.ReLU) -> None:
        super().__init__()
        self.save_hyperparameters()

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.log("train_loss", out["loss"])
        return out

    def validation_step(self, batch, batch_idx):
        out = super().validation_step(batch, batch_idx)
        self.log("val_loss", out["x"])
        return out


class SavingCheckpoint(Checkpoint):
    """Saves at each epoch end and reports like ModelCheckpoint (save_top_k=-1: every checkpoint kept)."""

    save_top_k = -1

    def __init__(self, dirpath: Path) -> None:
        self.dirpath = dirpath
        self.best_model_path = ""
        self.best_model_score = None
        self.last_model_path = ""
        self.current_score = None
        self.best_k_models: dict[str, torch.Tensor] = {}

    def on_train_epoch_end(self, trainer, pl_module):
        path = str(self.dirpath / f"epoch={trainer.current_epoch}.ckpt")
        trainer.save_checkpoint(path)
        self.last_model_path = self.best_model_path = path
        self.current_score = self.best_model_score = trainer.callback_metrics["val_loss"]
        for logger in trainer.loggers:
            logger.after_save_checkpoint(self)


def _run_dir(root: Path) -> str:
    (run_dir,) = glob.glob(str(root / "wandb" / "offline-run-*"))
    return run_dir


def _fit(logger: WandbLogger, tmp_path: Path, model: BoringModel | None = None, **kwargs) -> Trainer:
    trainer = Trainer(logger=logger, max_epochs=2, limit_train_batches=2, limit_val_batches=1, log_every_n_steps=1,
                      enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing="callbacks" in kwargs, default_root_dir=tmp_path, **kwargs)
    trainer.fit(model or LoggingModel())
    return trainer


def test_offline_run_records_config_and_metrics_against_global_step(tmp_path, wandb_env, wandb_records,
                                                                     wandb_history):
    import wandb

    logger = WandbLogger(project="proj", name="first", save_dir=tmp_path, offline=True)
    _fit(logger, tmp_path, LoggingModel(lr=0.3))
    run_id = logger.version
    wandb.finish()
    records = wandb_records(_run_dir(tmp_path))
    run = next(rec for kind, rec in records if kind == "run")
    assert (run.run_id, run.project, run.display_name) == (run_id, "proj", "first")
    config = {}
    for kind, rec in records:
        if kind in ("config", "run"):
            updates = rec.update if kind == "config" else rec.config.update
            config.update({u.key: json.loads(u.value_json) for u in updates})
    assert config["lr"] == 0.3
    assert config["activation"] == "ReLU"  # a class is recorded by name, never called
    rows = wandb_history(records)
    train = [(r["trainer/global_step"], r["epoch"]) for r in rows if "train_loss" in r]
    assert train == [(0, 0), (1, 0), (2, 1), (3, 1)]
    assert [r["trainer/global_step"] for r in rows if "val_loss" in r] == [1, 3]
    metrics = {rec.glob_name or rec.name: rec.step_metric for kind, rec in records if kind == "metric"}
    assert metrics == {"trainer/global_step": "", "*": "trainer/global_step"}


def test_log_model_records_checkpoint_artifacts_offline(tmp_path, wandb_env, wandb_records):
    import wandb

    logger = WandbLogger(project="proj", save_dir=tmp_path, offline=True, log_model="all")
    _fit(logger, tmp_path, callbacks=[SavingCheckpoint(tmp_path)])
    run_id = logger.version
    wandb.finish()
    artifacts = [rec for kind, rec in wandb_records(_run_dir(tmp_path)) if kind == "artifact"]
    assert [(a.name, a.type) for a in artifacts] == [(f"model-{run_id}", "model")] * 2
    assert [sorted(a.aliases) for a in artifacts] == [["best", "latest"]] * 2
    assert [json.loads(a.metadata)["original_filename"] for a in artifacts] == ["epoch=0.ckpt", "epoch=1.ckpt"]
    assert [entry.path for entry in artifacts[0].manifest.contents] == ["model.ckpt"]


def test_watch_logs_gradients(tmp_path, wandb_env, wandb_records, wandb_history):
    import wandb

    class Watched(LoggingModel):
        def on_train_start(self):
            self.logger.watch(self, log="gradients", log_freq=1)

    logger = WandbLogger(project="proj", save_dir=tmp_path, offline=True)
    _fit(logger, tmp_path, Watched())
    wandb.finish()
    rows = wandb_history(wandb_records(_run_dir(tmp_path)))
    histograms = [r for r in rows if r.get("gradients/layer.weight/_type") == "histogram"]
    assert len(histograms) == 4  # log_freq=1: one per backward pass
    assert all(sum(r["gradients/layer.weight/values"]) == 64 for r in histograms)  # 2x32 weight gradients


def test_version_and_name_without_starting_a_run(tmp_path, wandb_env):
    import wandb

    logger = WandbLogger(project="proj", version="abc123", save_dir=tmp_path, offline=True)
    assert (logger.name, logger.version, logger.save_dir) == ("proj", "abc123", str(tmp_path))
    assert wandb.run is None
    assert logger.experiment.id == "abc123"


def test_trainer_log_dir_is_the_save_dir(tmp_path, wandb_env):
    logger = WandbLogger(project="proj", save_dir=tmp_path / "wb", offline=True)
    trainer = Trainer(logger=logger, default_root_dir=tmp_path)
    assert trainer.log_dir == str(tmp_path / "wb")


def test_prefix_and_log_without_step(tmp_path, wandb_env, wandb_records, wandb_history):
    import wandb

    logger = WandbLogger(project="proj", save_dir=tmp_path, offline=True, prefix="val")
    logger.log_metrics({"acc": 0.5})
    logger.log_metrics({"acc": 0.75}, step=4)
    wandb.finish()
    rows = wandb_history(wandb_records(_run_dir(tmp_path)))
    assert [r["val-acc"] for r in rows] == [0.5, 0.75]
    assert rows[1]["trainer/global_step"] == 4


def test_logger_pickles_by_run_id(tmp_path, wandb_env):
    import pickle

    logger = WandbLogger(project="proj", save_dir=tmp_path, offline=True)
    run_id = logger.experiment.id
    clone = pickle.loads(pickle.dumps(logger))
    assert clone._experiment is None
    assert clone.version == run_id
    assert os.fspath(clone.save_dir) == str(tmp_path)


def test_run_starts_when_fit_starts(tmp_path, wandb_env):
    import wandb

    class Model(BoringModel):  # no hyperparameters and no metrics: the run still opens before training
        def training_step(self, batch, batch_idx):
            assert wandb.run is not None
            return super().training_step(batch, batch_idx)

    logger = WandbLogger(project="proj", save_dir=tmp_path, offline=True)
    _fit(logger, tmp_path, Model())
    assert logger.version == wandb.run.id
