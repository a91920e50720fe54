"""The digits example (``make demo``) trains, keeps its best checkpoint, and tests from it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits.py"


def test_digits_example_leaves_its_best_checkpoint_under_the_logger_version(tmp_path: Path) -> None:
    pytest.importorskip("sklearn", reason="the example reads scikit-learn's bundled digits")
    spec = importlib.util.spec_from_file_location("digits_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    digits = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(digits)
    accuracy = digits.main(["--fast", "--root-dir", str(tmp_path)])
    assert accuracy > 0.8
    checkpoints = list((tmp_path / "lightning_logs").glob("version_*/checkpoints/*.ckpt"))
    assert len(checkpoints) == 1  # ModelCheckpoint(monitor="val_acc", mode="max") keeps the best one
    saved = torch.load(checkpoints[0], weights_only=True)
    assert saved["callbacks"]  # a full checkpoint: it can resume the fit
    model = digits.DigitsClassifier.load_from_checkpoint(checkpoints[0])
    assert model.hparams.hidden == 128
