"""``load_from_checkpoint``: ``strict`` against the model's ``strict_loading``, and an empty state dict."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchbolt.demos.boring_classes import BoringModel


class Lenient(BoringModel):
    def __init__(self) -> None:
        super().__init__()
        self.strict_loading = False


def _save(tmp_path: Path, model: BoringModel, state_dict: dict | None = None) -> Path:
    path = tmp_path / "model.ckpt"
    checkpoint = {"state_dict": model.state_dict() if state_dict is None else state_dict,
                  "pytorch-lightning_version": "2.6.5", "hyper_parameters": {}}
    torch.save(checkpoint, path)
    return path


def test_strict_that_contradicts_strict_loading_is_refused(tmp_path: Path) -> None:
    path = _save(tmp_path, Lenient())
    with pytest.raises(ValueError, match=r"strict=True.*in conflict with `Lenient.strict_loading=False`"):
        Lenient.load_from_checkpoint(path, strict=True)
    assert isinstance(Lenient.load_from_checkpoint(path, strict=False), Lenient)
    assert isinstance(Lenient.load_from_checkpoint(path), Lenient)


def test_strict_alone_decides_when_the_model_does_not_set_strict_loading(tmp_path: Path) -> None:
    path = _save(tmp_path, BoringModel(), state_dict={"layer.weight": torch.zeros(2, 32)})
    with pytest.raises(RuntimeError, match="does not match BoringModel"):
        BoringModel.load_from_checkpoint(path, strict=True)
    with pytest.warns(UserWarning, match="missing keys"):
        BoringModel.load_from_checkpoint(path, strict=False)


def test_an_empty_state_dict_warns(tmp_path: Path) -> None:
    path = _save(tmp_path, BoringModel(), state_dict={})
    with pytest.warns(UserWarning, match="contains no parameters"):
        model = BoringModel.load_from_checkpoint(path, strict=False)
    assert model.device.type == "cpu"
