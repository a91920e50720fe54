"""Registry paths (``registry:<model>:version:<v>``): parsing, local folders, and the missing-client error."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from torchbolt.utilities.imports import module_available
from torchbolt.utilities.model_registry import (
    _determine_model_folder,
    _determine_model_name,
    _is_registry,
    _parse_registry_model_version,
    download_model_from_registry,
    find_model_local_ckpt_path,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("registry", True), ("REGISTRY:model", True), ("Registry:", True), ("registry_x", False),
     ("my-registry", False), ("", False), (None, False), (Path("registry"), False), ("model.ckpt", False)],
)
def test_is_registry(text: object, expected: bool) -> None:
    assert _is_registry(text) is expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("registry", ("", "")),
        ("registry:digits", ("digits", "")),
        ("registry:org/team/digits:version:v3", ("org/team/digits", "v3")),
        ("registry:digits:VERSION:1.0", ("digits", "1.0")),
        ("registry:version:v2", ("", "v2")),
        ("Registry:Version:v2", ("", "v2")),
    ],
)
def test_parse_registry_model_version(path: str, expected: tuple[str, str]) -> None:
    assert _parse_registry_model_version(path) == expected


@pytest.mark.parametrize("path", ["", None, "checkpoints/last.ckpt", "best"])
def test_parse_rejects_other_paths(path: object) -> None:
    with pytest.raises(ValueError, match="Invalid registry path"):
        _parse_registry_model_version(path)


def test_model_name_uses_the_trainer_default_when_the_path_names_none() -> None:
    assert _determine_model_name("registry:digits:version:1.0", "fallback") == "digits:1.0"
    assert _determine_model_name("registry:digits", "fallback") == "digits"
    assert _determine_model_name("registry:version:v2", "fallback") == "fallback:v2"
    assert _determine_model_name("registry", "fallback") == "fallback"
    with pytest.raises(ValueError, match="names no model.*model_registry"):
        _determine_model_name("registry:version:v2", None)


def test_model_folder_flattens_the_name(tmp_path: Path) -> None:
    assert _determine_model_folder("digits", str(tmp_path)) == os.path.join(str(tmp_path), "digits")
    assert _determine_model_folder("org/digits:1.0", str(tmp_path)) == os.path.join(str(tmp_path), "org_digits_1.0")
    with pytest.raises(ValueError, match="model name is empty"):
        _determine_model_folder("", str(tmp_path))


def test_find_model_local_ckpt_path_reads_the_downloaded_folder(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"No `.ckpt` file"):
        find_model_local_ckpt_path("registry:digits:version:2", None, str(tmp_path))
    folder = tmp_path / "digits_2"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(RuntimeError, match=r"No `.ckpt` file"):
        find_model_local_ckpt_path("registry:digits:version:2", None, str(tmp_path))
    (folder / "b.ckpt").write_bytes(b"")
    (folder / "a.ckpt").write_bytes(b"")
    found = find_model_local_ckpt_path("registry:version:2", "digits", str(tmp_path))
    assert found == str(folder / "a.ckpt")


@pytest.mark.skipif(module_available("litmodels"), reason="litmodels is installed here")
def test_download_without_litmodels_names_the_install(tmp_path: Path) -> None:
    waited: list[str] = []
    trainer = SimpleNamespace(local_rank=0, default_root_dir=str(tmp_path), model_registry=None,
                              strategy=SimpleNamespace(barrier=waited.append))
    with pytest.raises(ModuleNotFoundError, match="pip install litmodels"):
        download_model_from_registry("registry:digits", trainer)
    trainer.local_rank = 1  # other local ranks only wait for rank 0's download
    download_model_from_registry("registry:digits", trainer)
    assert waited == ["download_model_from_registry"]
