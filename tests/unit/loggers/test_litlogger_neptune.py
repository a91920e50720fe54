"""LitLogger without its client package, and the NeptuneLogger name kept at Lightning's path.

``litlogger`` talks to the hosted lightning.ai service, so what runs here is everything short of starting
an experiment: the settings, the folders, the rank-zero rules and the errors that name the fix.
"""

from __future__ import annotations

import os
from argparse import Namespace
from pathlib import Path

import pytest

from torchbolt.loggers import LitLogger, NeptuneLogger
from torchbolt.loggers.logger import DummyExperiment
from torchbolt.utilities.imports import module_available
from torchbolt.utilities.rank_zero import rank_zero_only

needs_no_litlogger = pytest.mark.skipif(module_available("litlogger"), reason="litlogger is installed here")


def test_import_torchbolt_does_not_import_the_clients(subprocess_env: dict[str, str]) -> None:
    import subprocess
    import sys

    code = (
        "import sys, torchbolt, torchbolt.loggers, torchbolt.utilities.model_registry;"
        "print([m for m in ('litlogger', 'litmodels', 'neptune') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_neptune_logger_refuses_to_be_created_and_names_replacements() -> None:
    from torchbolt.loggers.neptune import NeptuneLogger as at_module_path

    assert at_module_path is NeptuneLogger
    with pytest.raises(RuntimeError, match="Neptune service has been shut down.*LitLogger"):
        NeptuneLogger(api_key="ANONYMOUS", project="a/b", name="run", log_model_checkpoints=False, prefix="x")
    with pytest.raises(RuntimeError, match="no longer supported"):
        NeptuneLogger()


def test_litlogger_folders_and_names_without_starting(tmp_path: Path) -> None:
    logger = LitLogger(root_dir=tmp_path / "logs", name="digits", teamspace="research", metadata={"team": "a"})
    assert logger.name == "digits"
    assert logger.version is None  # set when the experiment starts
    assert logger.root_dir == str(tmp_path / "logs")
    assert logger.log_dir == logger.save_dir == os.path.join(str(tmp_path / "logs"), "digits")
    assert logger.sub_dir is None
    assert not (tmp_path / "logs").exists()  # nothing is created before the experiment starts
    assert LitLogger(name="x").root_dir == "./lightning_logs"


def test_litlogger_log_dir_expands_user_and_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TB_LOGS_ROOT", str(tmp_path))
    assert LitLogger(root_dir="$TB_LOGS_ROOT/logs", name="n").log_dir == os.path.join(str(tmp_path), "logs", "n")
    assert LitLogger(root_dir="~/logs", name="n").log_dir == os.path.join(os.path.expanduser("~"), "logs", "n")


@needs_no_litlogger
def test_litlogger_without_the_client_names_the_install(tmp_path: Path) -> None:
    with pytest.raises(ModuleNotFoundError, match="pip install litlogger"):
        LitLogger(root_dir=tmp_path)  # no name: the client would generate one
    logger = LitLogger(root_dir=tmp_path, name="run")
    for call in (
        lambda: logger.experiment,
        lambda: logger.log_metrics({"loss": 1.0}, step=0),
        lambda: logger.log_hyperparams(Namespace(lr=0.1)),
        lambda: logger.log_metadata({"a": 1}),
    ):
        with pytest.raises(ModuleNotFoundError, match="`litlogger`.*pip install litlogger"):
            call()
    logger.finalize("success")  # no experiment was started: nothing to close
    logger.save()


def test_litlogger_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match=r"LitLogger\(name=...\)"):
        LitLogger(name=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"LitLogger\(metadata=...\)"):
        LitLogger(name="n", metadata=["a"])  # type: ignore[arg-type]


def test_litlogger_on_other_ranks_does_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = LitLogger(root_dir=tmp_path, name="run")
    assert isinstance(logger.experiment, DummyExperiment)
    logger.log_metrics({"loss": 1.0}, step=3)  # rank-zero only: no client needed, nothing written
    logger.log_hyperparams({"lr": 0.1})
    assert not tmp_path.joinpath("run").exists()


def test_litlogger_checkpoint_upload_policy(tmp_path: Path) -> None:
    class Callback:
        save_top_k = 2
        best_k_models: dict[str, float] = {}

    quiet = LitLogger(root_dir=tmp_path, name="run")  # log_model=False: checkpoints are never uploaded
    quiet.after_save_checkpoint(Callback())
    assert quiet._checkpoint_callback is None
    kept = LitLogger(root_dir=tmp_path, name="run", log_model=True)
    callback = Callback()
    kept.after_save_checkpoint(callback)  # uploaded at finalize, when the kept set is final
    assert kept._checkpoint_callback is callback


def test_litlogger_log_graph_warns(tmp_path: Path) -> None:
    import torch

    with pytest.warns(UserWarning, match="does not support `log_graph`"):
        LitLogger(root_dir=tmp_path, name="run").log_graph(torch.nn.Linear(1, 1))
