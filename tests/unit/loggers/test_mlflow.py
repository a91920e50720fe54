"""MLFlowLogger on the real mlflow package, read back with ``MlflowClient`` (local stores only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from torchbolt import Trainer
from torchbolt.callbacks import Checkpoint
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.loggers import MLFlowLogger
from torchbolt.utilities.exceptions import MisconfigurationException

pytest.importorskip("mlflow", reason="these tests need the mlflow package")


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module (creating its tables takes seconds); each test has its own run."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        # MLflow fixes the store's default artifact root (./mlruns) when it first opens it: keep it here
        patch.chdir(root)
        MlflowClient(uri).search_experiments()
    return uri


@pytest.fixture
def file_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # newer MLflow refuses file stores without it
    return f"file:{tmp_path / 'mlruns'}"


class LoggingModel(BoringModel):
    def __init__(self, lr: float = 0.1, opt: dict | None = None) -> None:
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
    """A minimal checkpoint callback with ModelCheckpoint's reporting attributes: saves each epoch end."""

    def __init__(self, dirpath: Path, save_top_k: int = 1) -> None:
        self.dirpath = dirpath
        self.save_top_k = save_top_k
        self.monitor = "val_loss"
        self.best_model_path = ""
        self.best_model_score: torch.Tensor | None = None
        self.last_model_path = ""
        self.current_score: torch.Tensor | None = None
        self.best_k_models: dict[str, torch.Tensor] = {}

    def on_train_epoch_end(self, trainer, pl_module):
        path = str(self.dirpath / f"epoch={trainer.current_epoch}.ckpt")
        trainer.save_checkpoint(path)
        score = trainer.callback_metrics["val_loss"]
        self.last_model_path, self.current_score = path, score
        if self.best_model_score is None or score < self.best_model_score:
            self.best_model_path, self.best_model_score = path, score
        self.best_k_models[path] = score
        for logger in trainer.loggers:
            logger.after_save_checkpoint(self)


def _fit(logger: MLFlowLogger, tmp_path: Path, model: BoringModel | None = None, **kwargs) -> Trainer:
    trainer = Trainer(logger=logger, max_epochs=2, limit_train_batches=2, limit_val_batches=1, log_every_n_steps=1,
                      enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing="callbacks" in kwargs, default_root_dir=tmp_path, **kwargs)
    trainer.fit(model or LoggingModel())
    return trainer


def test_sqlite_run_has_params_metrics_with_steps_tags_and_status(tmp_path, sqlite_uri):
    from mlflow.tracking import MlflowClient

    logger = MLFlowLogger(experiment_name="tags", run_name="first", tracking_uri=sqlite_uri, tags={"team": "a"})
    _fit(logger, tmp_path, LoggingModel(lr=0.2, opt={"name": "sgd"}))
    client = MlflowClient(sqlite_uri)
    run = client.get_run(logger.run_id)
    assert run.info.run_name == "first"
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == client.get_experiment_by_name("tags").experiment_id == logger.name
    assert run.data.params == {"lr": "0.2", "opt/name": "sgd"}
    assert run.data.tags["team"] == "a"
    assert [m.step for m in client.get_metric_history(logger.run_id, "train_loss")] == [0, 1, 2, 3]
    assert [m.step for m in client.get_metric_history(logger.run_id, "val_loss")] == [1, 3]
    assert [(m.step, m.value) for m in client.get_metric_history(logger.run_id, "epoch")][-1] == (3, 1.0)


def test_file_store_run_is_readable(tmp_path, file_store):
    from mlflow.tracking import MlflowClient

    logger = MLFlowLogger(experiment_name="exp", tracking_uri=file_store)
    trainer = _fit(logger, tmp_path)
    assert logger.save_dir == str(tmp_path / "mlruns")
    assert trainer.log_dir == logger.save_dir
    run = MlflowClient(file_store).get_run(logger.version)
    assert run.data.metrics["val_loss"] == pytest.approx(trainer.callback_metrics["val_loss"].item())


def test_save_dir_gives_the_default_file_uri(tmp_path, file_store, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    logger = MLFlowLogger(save_dir=str(tmp_path / "runs"))
    logger.log_metrics({"x": 1.0}, step=0)
    assert logger._tracking_uri == f"file:{tmp_path / 'runs'}"
    assert (tmp_path / "runs" / logger.experiment_id / logger.run_id).is_dir()


def test_existing_run_id_continues_the_run(tmp_path, sqlite_uri):
    from mlflow.tracking import MlflowClient

    first = MLFlowLogger(tracking_uri=sqlite_uri)
    first.log_metrics({"loss": 1.0}, step=0)
    first.finalize("success")
    again = MLFlowLogger(tracking_uri=sqlite_uri, run_id=first.run_id)
    again.log_metrics({"loss": 0.5}, step=1)
    history = MlflowClient(sqlite_uri).get_metric_history(first.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5)]
    assert again.experiment_id == first.experiment_id


def test_failed_fit_marks_the_run_failed(tmp_path, sqlite_uri):
    from mlflow.tracking import MlflowClient

    class Broken(LoggingModel):
        def training_step(self, batch, batch_idx):
            if batch_idx == 1:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    logger = MLFlowLogger(tracking_uri=sqlite_uri)
    with pytest.raises(RuntimeError, match="boom"):
        _fit(logger, tmp_path, Broken())
    assert MlflowClient(sqlite_uri).get_run(logger.run_id).info.status == "FAILED"


def test_invalid_metric_characters_are_removed(tmp_path, sqlite_uri):
    from mlflow.tracking import MlflowClient

    logger = MLFlowLogger(tracking_uri=sqlite_uri, prefix="p")
    with pytest.warns(RuntimeWarning, match="Replacing p-acc@1 with p-acc1"):
        logger.log_metrics({"acc@1": torch.tensor(0.5)}, step=2)
    assert MlflowClient(sqlite_uri).get_run(logger.run_id).data.metrics == {"p-acc1": 0.5}


def test_log_model_all_uploads_each_checkpoint_with_metadata(tmp_path, sqlite_uri):
    from mlflow.tracking import MlflowClient

    logger = MLFlowLogger(tracking_uri=sqlite_uri, log_model="all", checkpoint_path_prefix="ckpts")
    checkpoint = SavingCheckpoint(tmp_path)
    _fit(logger, tmp_path, callbacks=[checkpoint])
    client = MlflowClient(sqlite_uri)
    uploaded = sorted(a.path for a in client.list_artifacts(logger.run_id, "ckpts"))
    assert uploaded == ["ckpts/epoch=0", "ckpts/epoch=1"]
    files = sorted(a.path for a in client.list_artifacts(logger.run_id, "ckpts/epoch=1"))
    assert files == ["ckpts/epoch=1/aliases.txt", "ckpts/epoch=1/epoch=1.ckpt", "ckpts/epoch=1/metadata.yaml"]
    local = client.download_artifacts(logger.run_id, "ckpts/epoch=1", str(tmp_path / "dl"))
    with open(os.path.join(local, "metadata.yaml")) as f:
        metadata = yaml.safe_load(f)
    assert metadata["original_filename"] == "epoch=1.ckpt"
    assert metadata["Checkpoint"]["monitor"] == "val_loss"
    assert torch.load(os.path.join(local, "epoch=1.ckpt"), weights_only=True)["epoch"] == 1


def test_log_model_true_uploads_at_the_end(tmp_path, sqlite_uri):
    from mlflow.tracking import MlflowClient

    class Spy(SavingCheckpoint):
        uploaded_during_fit: list[str] = []

        def on_train_end(self, trainer, pl_module):
            client = MlflowClient(sqlite_uri)
            self.uploaded_during_fit = [a.path for a in client.list_artifacts(logger.run_id)]

    logger = MLFlowLogger(tracking_uri=sqlite_uri, log_model=True)
    checkpoint = Spy(tmp_path)
    _fit(logger, tmp_path, callbacks=[checkpoint])
    assert checkpoint.uploaded_during_fit == []
    uploaded = sorted(a.path for a in MlflowClient(sqlite_uri).list_artifacts(logger.run_id))
    assert uploaded == ["epoch=0", "epoch=1"]


def test_unopenable_store_fails_at_construction(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(MisconfigurationException, match="could not open the tracking store"):
        MLFlowLogger(tracking_uri=f"sqlite:///{blocker}/sub/mlflow.db")


def test_refused_file_store_names_the_fix(tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = f"file:{tmp_path / 'mlruns'}"
    try:
        MlflowClient(uri)
    except MlflowException:
        pass
    else:
        pytest.skip("this mlflow version accepts file stores without MLFLOW_ALLOW_FILE_STORE")
    with pytest.raises(MisconfigurationException, match="MLFLOW_ALLOW_FILE_STORE=true"):
        MLFlowLogger(tracking_uri=uri)
