"""The Logger interface, rank-zero behaviour, light imports and clear errors for missing packages."""

from __future__ import annotations

import subprocess
import sys
from argparse import Namespace
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from torchbolt import Trainer
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.loggers import CSVLogger, DummyLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from torchbolt.loggers.logger import _flatten_dict, _sanitize_params, rank_zero_experiment
from torchbolt.utilities.imports import module_available
from torchbolt.utilities.rank_zero import rank_zero_only


class RecordingLogger(Logger):
    """A custom logger written against the public interface, recording every call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    @property
    def name(self) -> str:
        return "rec"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics, step=None):
        self.calls.append(("log_metrics", dict(metrics), step))

    def log_hyperparams(self, params, *args, **kwargs):
        self.calls.append(("log_hyperparams", dict(params)))

    def log_graph(self, model, input_array=None):
        self.calls.append(("log_graph",))

    def save(self):
        self.calls.append(("save",))

    def finalize(self, status):
        self.calls.append(("finalize", status))


class HParamsModel(BoringModel):
    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.log("loss", out["loss"])
        return out


def test_custom_logger_sees_the_lifecycle_in_order(tmp_path):
    logger = RecordingLogger()
    trainer = Trainer(logger=logger, max_steps=2, limit_val_batches=0, log_every_n_steps=1,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                      default_root_dir=tmp_path)
    trainer.fit(HParamsModel(lr=0.5))
    kinds = [c[0] for c in logger.calls]
    assert kinds[:3] == ["log_hyperparams", "log_graph", "save"]
    assert logger.calls[0] == ("log_hyperparams", {"lr": 0.5})
    assert kinds[-1] == "finalize" and logger.calls[-1][1] == "success"
    metric_calls = [c for c in logger.calls if c[0] == "log_metrics"]
    assert [(sorted(m), step) for _, m, step in metric_calls] == [(["epoch", "loss"], 0), (["epoch", "loss"], 1)]
    assert all(isinstance(v, float | int) for _, m, _ in metric_calls for v in m.values())


def test_custom_logger_without_directories_uses_default_root_dir(tmp_path):
    trainer = Trainer(logger=RecordingLogger(), default_root_dir=tmp_path)
    assert trainer.log_dir == str(tmp_path)


def test_non_logger_in_list_is_rejected():
    from torchbolt.utilities.exceptions import MisconfigurationException

    with pytest.raises(MisconfigurationException, match="pass torchbolt loggers"):
        Trainer(logger=[CSVLogger("."), "tensorboard"])


def test_rank_zero_experiment_gives_other_ranks_a_dummy(tmp_path):
    logger = CSVLogger(tmp_path)
    rank_zero_only.rank = 1  # restored by the autouse fixture
    experiment = logger.experiment
    experiment.log_metrics({"a": 1})  # accepted, does nothing
    assert experiment[0] is experiment
    logger.log_metrics({"a": 1.0}, step=0)
    logger.save()
    assert not (tmp_path / "lightning_logs").exists()


def test_dummy_logger_accepts_any_call():
    logger = DummyLogger()
    logger.log_metrics({"a": 1.0}, step=0)
    logger.log_image(key="x", images=[])  # not part of the base interface: a no-op
    assert logger[0] is logger
    assert (logger.name, logger.version) == ("", "")


def test_fast_dev_run_uses_a_dummy_logger(tmp_path):
    trainer = Trainer(fast_dev_run=True, default_root_dir=tmp_path, enable_progress_bar=False,
                      enable_model_summary=False)
    trainer.fit(HParamsModel())
    assert isinstance(trainer.logger, DummyLogger)
    assert not (tmp_path / "lightning_logs").exists()


def test_flatten_and_sanitize_params():
    @dataclass
    class Opt:
        name: str = "adam"
        betas: tuple = (0.9, 0.99)

    flat = _flatten_dict({"opt": Opt(), "ns": Namespace(a=1), "nested": {"x": {"y": None}}})
    assert flat == {"opt/name": "adam", "opt/betas": (0.9, 0.99), "ns/a": 1, "nested/x/y": None}
    clean = _sanitize_params({**flat, "np": np.float32(0.5), "t": torch.tensor(1.0), "m": torch.ones(2, 2)})
    assert clean["np"] == 0.5 and isinstance(clean["np"], float)
    assert clean["opt/betas"] == "(0.9, 0.99)"
    assert clean["nested/x/y"] == "None"
    assert isinstance(clean["t"], torch.Tensor)
    assert isinstance(clean["m"], str)


def test_rank_zero_experiment_decorator_runs_on_rank_zero():
    class L:
        @property
        @rank_zero_experiment
        def experiment(self):
            return "real"

    assert L().experiment == "real"


def test_import_torchbolt_does_not_import_logger_backends(subprocess_env):
    code = (
        "import sys, torchbolt, torchbolt.loggers, torchbolt.profilers, torchbolt.callbacks\n"
        "from torchbolt import Trainer\n"
        "Trainer(logger=False)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('tensorboard', 'tensorboardX', 'mlflow', 'wandb', 'torchmetrics', 'psutil'))\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("factory", "package", "extra"),
    [
        (lambda tmp: MLFlowLogger(tracking_uri=f"sqlite:///{tmp}/x.db"), "mlflow", "mlflow"),
        (lambda tmp: WandbLogger(save_dir=tmp, offline=True), "wandb", "wandb"),
        (lambda tmp: TensorBoardLogger(tmp), "tensorboard", "tensorboard"),
    ],
)
def test_missing_package_names_the_extra(tmp_path, monkeypatch, factory, package, extra):
    monkeypatch.setitem(sys.modules, package, None)  # makes the package unimportable, as if not installed
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    module_available.cache_clear()
    try:
        with pytest.raises(ModuleNotFoundError, match=rf"pip install 'torchbolt\[{extra}\]'"):
            factory(tmp_path)
    finally:
        monkeypatch.undo()
        module_available.cache_clear()


class DuckLogger:
    """Not a ``Logger`` subclass: only the calls the Trainer makes."""

    def __init__(self, root: str) -> None:
        self.save_dir = root
        self.metrics: list[dict[str, float]] = []
        self.hparams: list[dict[str, Any]] = []

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.append(dict(metrics))

    def log_hyperparams(self, params: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        self.hparams.append(dict(params))

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        pass

    def save(self) -> None:
        pass

    def finalize(self, status: str) -> None:
        pass


def test_a_duck_typed_logger_is_accepted_and_called(tmp_path):
    duck = DuckLogger(str(tmp_path))
    trainer = Trainer(logger=duck, default_root_dir=tmp_path, max_steps=2, limit_val_batches=0,
                      log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False)
    assert trainer.loggers == [duck]

    class Logs(BoringModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            out = super().training_step(batch, batch_idx)
            self.log("seen", float(batch_idx))
            return out

    trainer.fit(Logs())
    assert [m["seen"] for m in duck.metrics] == [0.0, 1.0]


@pytest.mark.parametrize("value", ["tensorboard", 3])
def test_a_value_that_is_not_a_logger_is_rejected(value):
    from torchbolt.utilities.exceptions import MisconfigurationException

    with pytest.raises(MisconfigurationException, match="Trainer\\(logger="):
        Trainer(logger=value)


def test_clashing_module_and_datamodule_hparams_raise_runtime_error(tmp_path):
    from torchbolt.demos.boring_classes import BoringDataModule

    class Model(BoringModel):
        def __init__(self, data_dir: str = "a") -> None:
            super().__init__()
            self.save_hyperparameters()

    class Data(BoringDataModule):
        def __init__(self, data_dir: str = "b") -> None:
            super().__init__()
            self.save_hyperparameters()

    trainer = Trainer(logger=CSVLogger(tmp_path), default_root_dir=tmp_path, max_steps=1,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    with pytest.raises(RuntimeError, match=r"Error while merging hparams: the keys \['data_dir'\]"):
        trainer.fit(Model(), datamodule=Data())


def test_dummy_experiment_accepts_calls_and_item_assignment():
    from torchbolt.loggers.logger import DummyExperiment

    experiment = DummyExperiment()
    experiment["tag"] = "value"
    assert experiment[0] is experiment
    assert experiment.add_scalar("x", 1.0) is None
