"""The scripts of the seed articles run unchanged except for ``import torchbolt as pl``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _run(script: str, env: dict[str, str], cwd: Path) -> str:
    proc = subprocess.run([sys.executable, str(SCRIPTS / script)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_litmodel_with_train_and_val_loaders(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    out = _run("seed_litmodel.py", subprocess_env, tmp_path)
    match = re.search(r"RESULT epochs=(\d+) steps=(\d+) first=([\d.]+) last=([\d.]+)", out)
    assert match, out[-2000:]
    epochs, steps, first, last = int(match[1]), int(match[2]), float(match[3]), float(match[4])
    assert epochs == 10 and steps == 80
    assert last < first
    # no validation_step: the val loader is skipped with a warning, not an error
    assert "no `validation_step`" in out
    assert (tmp_path / "lightning_logs" / "version_0").is_dir()


def test_mnist_style_datamodule_fit_then_test(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    out = _run("seed_datamodule.py", subprocess_env, tmp_path)
    match = re.search(r"RESULT test_acc=([\d.]+)", out)
    assert match, out[-2000:]
    assert float(match[1]) > 0.9
    assert "Test metric" in out
