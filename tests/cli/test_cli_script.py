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
