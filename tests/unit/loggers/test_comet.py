"""CometLogger: offline experiments on the real comet_ml package, read back from Comet's offline archive."""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path

import pytest
import torch

from torchbolt import LightningModule, Trainer
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.loggers import CometLogger

_HAS_COMET = importlib.util.find_spec("comet_ml") is not None


@pytest.mark.skipif(_HAS_COMET, reason="comet_ml is installed here")
def test_without_comet_ml_creating_the_logger_names_the_package() -> None:
    with pytest.raises(ModuleNotFoundError, match=r"comet_ml.*pip install 'torchbolt\[comet\]'"):
        CometLogger(online=False)


class _Logs(BoringModel):
    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.step(batch)
        self.log("train_loss", loss)
        return loss


def _offline_messages(directory: Path) -> list[dict]:
    (archive,) = directory.glob("*.zip")
    with zipfile.ZipFile(archive) as zf:
        return [json.loads(line) for line in zf.read("messages.json").decode().splitlines() if line.strip()]


@pytest.mark.skipif(not _HAS_COMET, reason="needs the comet_ml package")
def test_offline_fit_writes_metrics_and_hyperparameters_to_the_archive(tmp_path: Path) -> None:
    offline = tmp_path / "comet"
    logger = CometLogger(project="torchbolt-tests", online=False, offline_directory=str(offline), prefix="run",
                         log_code=False, log_git_metadata=False, log_env_details=False, auto_output_logging=None,
                         auto_metric_logging=False, auto_param_logging=False, display_summary_level=0)
    model: LightningModule = _Logs()
    trainer = Trainer(logger=logger, max_epochs=1, limit_train_batches=4, limit_val_batches=0, log_every_n_steps=1,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    logger.log_hyperparams({"lr": 0.1, "opt": {"name": "sgd"}})
    trainer.fit(model)
    key = logger.version
    assert isinstance(key, str) and key

    messages = _offline_messages(offline)  # the archive is written when the run ends (finalize)
    metrics = [m["payload"]["metric"] for m in messages if m.get("type") == "metric_msg"]
    steps = sorted(m["step"] for m in metrics if m["metricName"] == "run-train_loss")
    assert steps == [0, 1, 2, 3]
    params = {p["payload"]["param"]["paramName"]: p["payload"]["param"]["paramValue"]
              for p in messages if p.get("type") == "parameter_msg"}
    assert params["lr"] == "0.1" or params["lr"] == 0.1
    assert "opt/name" in params
    assert len(list(offline.glob("*.zip"))) == 1 and logger.version == key  # no second experiment started


@pytest.mark.skipif(not _HAS_COMET, reason="needs the comet_ml package")
def test_older_argument_names_are_accepted(tmp_path: Path) -> None:
    logger = CometLogger(project_name="p", save_dir=str(tmp_path), offline=True, experiment_name="n")
    assert logger.name == "p" and logger.save_dir == str(tmp_path)
