"""LightningCLI as users run it: ``python main.py fit --config ...`` in a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "tests" / "scripts" / "cli_main.py"


@pytest.fixture
def script_env(subprocess_env: dict[str, str]) -> dict[str, str]:
    # the script imports its model from tests.helpers, as a user's script imports their package
    env = dict(subprocess_env)
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(REPO_ROOT)])
    env["OMP_NUM_THREADS"] = "1"  # tiny models: intra-op threads only contend on a shared machine
    return env


def main_py(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120)


def test_fit_from_merged_config_files_and_flags(tmp_path, script_env):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({
        "trainer": {"max_epochs": 3, "limit_train_batches": 2, "limit_val_batches": 1, "enable_progress_bar": False,
                    "enable_model_summary": False},
        "model": {"lr": 0.5, "hidden": 4},
        "data": {"batch_size": 8},
    }))
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"trainer": {"max_epochs": 2}, "model": {"lr": 0.05}}))
    proc = main_py(script_env, "fit", "--config", str(base), "--config", str(override), "--data.batch_size", "4",
                   "--trainer.callbacks+=StageRecorder", "--seed_everything", "11")
    assert proc.returncode == 0, proc.stderr
    assert "RESULT global_step=4 lr=0.05 batch_size=4 max_epochs=2" in proc.stdout
    saved = yaml.safe_load((tmp_path / "lightning_logs" / "version_0" / "config.yaml").read_text())
    assert saved["seed_everything"] == 11
    assert saved["model"]["init_args"]["hidden"] == 4  # subclass mode: class_path + init_args
    assert saved["trainer"]["callbacks"][0]["class_path"].endswith("StageRecorder")


def test_print_config_output_fed_back_prints_the_same(tmp_path, script_env):
    first = main_py(script_env, "fit", "--model=DeepCLIModel", "--model.depth=3", "--trainer.max_epochs=5",
                    "--optimizer=SGD", "--optimizer.lr=0.2", "--print_config")
    assert first.returncode == 0, first.stderr
    (tmp_path / "printed.yaml").write_text(first.stdout)
    second = main_py(script_env, "fit", "--config", "printed.yaml", "--print_config")
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert yaml.safe_load(first.stdout)["model"]["init_args"]["depth"] == 3
    assert not (tmp_path / "lightning_logs").exists()  # printing runs nothing


def test_unknown_key_exits_with_code_2(script_env):
    proc = main_py(script_env, "fit", "--trainer.no_such_flag", "1")
    assert proc.returncode == 2
    assert "no_such_flag" in proc.stderr


def test_bad_value_type_exits_with_code_2(tmp_path, script_env):
    (tmp_path / "bad.yaml").write_text("trainer:\n  max_epochs: many\n")
    proc = main_py(script_env, "fit", "--config", "bad.yaml")
    assert proc.returncode == 2
    assert "trainer.max_epochs" in proc.stderr and "many" in proc.stderr


PLANTED_MODULE = '''
from pathlib import Path
Path(__file__).with_name("IMPORTED").write_text("this module's code ran")
import torchbolt as pl
class PlantedModel(pl.LightningModule):
    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
'''


def _checkpoint_naming(tmp_path: Path, class_path: str) -> Path:
    """A real checkpoint of the script's model whose hyperparameters name ``class_path`` as its class."""
    import torch

    from tests.helpers.cli_models import CLIDataModule, CLIModel
    from torchbolt.cli import LightningCLI

    cli = LightningCLI(CLIModel, CLIDataModule, save_config_callback=None, args=[
        "fit", "--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=0",
        "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_checkpointing=false",
        "--trainer.enable_model_summary=false", "--model.hidden=5"])
    ckpt = tmp_path / "model.ckpt"
    cli.trainer.save_checkpoint(ckpt)
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["hyper_parameters"]["_class_path"] = class_path
    torch.save(checkpoint, ckpt)
    return ckpt


def test_ckpt_path_never_imports_a_module_the_checkpoint_names(tmp_path, script_env):
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "planted_model.py").write_text(PLANTED_MODULE)
    env = dict(script_env, PYTHONPATH=os.pathsep.join([script_env["PYTHONPATH"], str(planted)]))
    validate = ["validate", "--model=CLIModel", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
                "--trainer.limit_val_batches=1"]

    proc = main_py(env, *validate, f"--ckpt_path={_checkpoint_naming(tmp_path, 'planted_model.PlantedModel')}")
    assert proc.returncode != 0
    assert not (planted / "IMPORTED").exists(), "the module named by the checkpoint was imported"
    assert "'planted_model.PlantedModel'" in proc.stderr and "module `planted_model` is not imported" in proc.stderr
    assert "adapt_checkpoint_hparams" in proc.stderr  # the fix is named

    # the same script and checkpoint, naming the script's own model class, validates; the weights (hidden=5)
    # only load into a model built with the checkpoint's hidden=5, not the default 8
    ckpt = _checkpoint_naming(tmp_path, "tests.helpers.cli_models.CLIModel")
    proc = main_py(env, *validate, f"--ckpt_path={ckpt}")
    assert proc.returncode == 0, proc.stderr
    assert "val_loss" in proc.stdout
    assert not (planted / "IMPORTED").exists()
