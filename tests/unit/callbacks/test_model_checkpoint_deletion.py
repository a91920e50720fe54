"""What ``ModelCheckpoint`` may delete: only checkpoint files inside its own ``dirpath``.

A resumed fit restores ``best_model_path``, ``last_model_path`` and ``best_k_models`` from the
checkpoint and deletes those files when they rotate out. These tests resume from real checkpoints
whose callback state was edited to name files elsewhere (``..`` paths, absolute paths, paths through
a symlink that leaves ``dirpath``, an fsspec URL, a directory) and check that the files survive,
that one warning says so, and that ordinary rotation inside ``dirpath`` still deletes old files.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import torchbolt as pl
from torchbolt.callbacks import ModelCheckpoint
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.plugins.io.torch_io import TorchCheckpointIO


class Scored(BoringModel):
    """Logs ``val_score = scores[current_epoch]`` (decreasing scores: every epoch enters the top k)."""

    def __init__(self, scores: tuple[float, ...] = (5.0, 4.0, 3.0, 2.0)) -> None:
        super().__init__()
        self.scores = scores

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        self.log("val_score", torch.tensor(self.scores[self.current_epoch]))
        return super().validation_step(batch, batch_idx)


def _callback(dirpath: Path) -> ModelCheckpoint:
    return ModelCheckpoint(dirpath=dirpath, monitor="val_score", save_top_k=1, save_last=True, filename="{epoch}")


def _fit(callback: ModelCheckpoint, max_epochs: int, ckpt_path: str | None = None) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=max_epochs, limit_train_batches=2, limit_val_batches=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[callback])
    trainer.fit(Scored(), ckpt_path=ckpt_path)
    return trainer


def _crafted_checkpoint(tmp_path: Path, dirpath: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A checkpoint written by a real one-epoch fit, with its ``ModelCheckpoint`` state edited."""
    first = _callback(dirpath)
    _fit(first, max_epochs=1)
    checkpoint = torch.load(first.last_model_path, weights_only=True)
    (key,) = [k for k in checkpoint["callbacks"] if k.startswith("ModelCheckpoint")]
    edit(checkpoint["callbacks"][key])
    crafted = tmp_path / "crafted.ckpt"  # outside dirpath: the file resumed from is never a victim
    torch.save(checkpoint, crafted)
    return crafted


def _point_at(field: str, path: str) -> Callable[[dict[str, Any]], None]:
    def edit(state: dict[str, Any]) -> None:
        if field == "last_model_path":
            state["last_model_path"] = path
        else:  # the only top-k entry, so the next better score pushes it out
            state["best_k_models"] = {path: torch.tensor(10.0)}
            state["kth_best_model_path"] = path
            state["kth_value"] = torch.tensor(10.0)
            state["best_model_path"] = path
            state["best_model_score"] = torch.tensor(10.0)

    return edit


def _warnings_naming(record: list[warnings.WarningMessage], path: str) -> list[str]:
    return [str(w.message) for w in record if path in str(w.message)]


def _victim(tmp_path: Path, dirpath: Path, location: str) -> tuple[str, Callable[[], bool]]:
    """The path to plant in the state, and a check that the victim is still intact."""
    if location == "dotdot":  # a whole folder two levels above dirpath (an rmtree would take it all)
        folder = tmp_path / "victim.ckpt"
        folder.mkdir()
        (folder / "data.txt").write_text("precious")
        return f"{dirpath}/../../victim.ckpt", lambda: (folder / "data.txt").read_text() == "precious"
    if location in ("absolute", "symlink"):
        outside = tmp_path / "outside"
        outside.mkdir()
        victim = outside / "victim.ckpt"
        victim.write_text("precious")
        if location == "absolute":
            return str(victim), lambda: victim.read_text() == "precious"
        dirpath.mkdir(parents=True, exist_ok=True)
        os.symlink(outside, dirpath / "escape")  # a folder inside dirpath that leads out of it
        return str(dirpath / "escape" / "victim.ckpt"), lambda: victim.read_text() == "precious"
    if location == "memory":
        import fsspec

        url = f"memory://victims-{uuid.uuid4().hex}/victim.ckpt"
        fs = fsspec.filesystem("memory")
        with fs.open(url, "wb") as f:
            f.write(b"precious")
        return url, lambda: fs.cat(url) == b"precious"
    assert location == "directory-inside"  # a folder that looks like a checkpoint, inside dirpath
    folder = dirpath / "keep.ckpt"
    folder.mkdir(parents=True)
    (folder / "data.txt").write_text("precious")
    return str(folder), lambda: (folder / "data.txt").read_text() == "precious"


@pytest.mark.parametrize("field", ["last_model_path", "best_k_models"])
@pytest.mark.parametrize("location", ["dotdot", "absolute", "symlink", "memory", "directory-inside"])
def test_a_crafted_checkpoint_cannot_make_a_resumed_fit_delete_files_outside_dirpath(
        tmp_path: Path, location: str, field: str) -> None:
    dirpath = tmp_path / "run" / "ck"
    path, intact = _victim(tmp_path, dirpath, location)
    crafted = _crafted_checkpoint(tmp_path, dirpath, _point_at(field, path))

    resumed = _callback(dirpath)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer = _fit(resumed, max_epochs=3, ckpt_path=str(crafted))  # epochs 1 and 2 rotate files out

    assert trainer.global_step == 6
    assert intact(), f"{path} was deleted or changed"
    messages = _warnings_naming(record, path)
    assert len(messages) == 1, messages  # once, however often rotation comes back to it
    assert "will not delete" in messages[0]
    # what the callback wrote itself still rotates: one best file and one last file remain
    written = sorted(n for n in os.listdir(dirpath) if n.endswith(".ckpt") and n != "keep.ckpt")
    if field == "last_model_path":  # the first run's last.ckpt is no longer in the state: kept
        assert written == ["epoch=2.ckpt", "last-v1.ckpt", "last.ckpt"]
    else:  # the first run's epoch=0.ckpt is no longer in the state: kept; epoch=1 rotated out
        assert written == ["epoch=0.ckpt", "epoch=2.ckpt", "last.ckpt"]


def test_normal_rotation_inside_dirpath_still_deletes_the_old_top_k_files_after_a_resume(tmp_path: Path) -> None:
    dirpath = tmp_path / "ck"
    first = _callback(dirpath)
    _fit(first, max_epochs=1)
    assert sorted(os.listdir(dirpath)) == ["epoch=0.ckpt", "last.ckpt"]

    resumed = _callback(dirpath)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _fit(resumed, max_epochs=3, ckpt_path=str(dirpath / "last.ckpt"))
    assert sorted(os.listdir(dirpath)) == ["epoch=2.ckpt", "last.ckpt"]  # epoch=0 and epoch=1 rotated out
    assert not [w for w in record if "will not delete" in str(w.message)]


def test_a_restored_path_spelled_with_dots_that_stays_inside_dirpath_is_still_rotated(tmp_path: Path) -> None:
    dirpath = tmp_path / "ck"
    (dirpath / "sub").mkdir(parents=True)
    crafted = _crafted_checkpoint(tmp_path, dirpath, _point_at("best_k_models", f"{dirpath}/sub/../epoch=0.ckpt"))
    assert (dirpath / "epoch=0.ckpt").exists()
    _fit(_callback(dirpath), max_epochs=2, ckpt_path=str(crafted))
    assert not (dirpath / "epoch=0.ckpt").exists()
    assert (dirpath / "epoch=1.ckpt").exists()


def test_rotating_a_last_symlink_removes_the_link_and_never_its_target(tmp_path: Path) -> None:
    dirpath = tmp_path / "ck"
    dirpath.mkdir()
    target = tmp_path / "outside.ckpt"
    target.write_text("precious")
    os.symlink(target, dirpath / "old-last.ckpt")
    crafted = _crafted_checkpoint(tmp_path, dirpath, _point_at("last_model_path", str(dirpath / "old-last.ckpt")))
    _fit(_callback(dirpath), max_epochs=2, ckpt_path=str(crafted))
    assert not os.path.lexists(dirpath / "old-last.ckpt")  # the link was the callback's to rotate
    assert target.read_text() == "precious"


def test_checkpoint_io_never_deletes_a_directory(tmp_path: Path) -> None:
    folder = tmp_path / "folder.ckpt"
    folder.mkdir()
    (folder / "data.txt").write_text("precious")
    with pytest.raises(IsADirectoryError, match=r"folder\.ckpt is a directory.*left untouched"):
        TorchCheckpointIO().remove_checkpoint(folder)
    assert (folder / "data.txt").read_text() == "precious"

    import fsspec

    fs = fsspec.filesystem("memory")
    url = f"memory://dir-{uuid.uuid4().hex}/folder.ckpt"
    fs.pipe(f"{url}/data.txt", b"precious")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        TorchCheckpointIO().remove_checkpoint(url)
    assert fs.cat(f"{url}/data.txt") == b"precious"


def test_a_sharded_checkpoint_directory_is_removed_file_by_file_and_a_foreign_folder_never(tmp_path: Path) -> None:
    from torchbolt.strategies.fsdp import _remove_sharded_dir, _replace_dir

    sharded = tmp_path / "epoch=0.ckpt"
    sharded.mkdir()
    for name in ("meta.pt", ".metadata", "__0_0.distcp", "__1_0.distcp"):
        (sharded / name).write_bytes(b"shard")
    _remove_sharded_dir(str(sharded))
    assert not sharded.exists()

    foreign = tmp_path / "foreign.ckpt"
    (foreign / "nested").mkdir(parents=True)
    (foreign / "meta.pt").write_bytes(b"looks like one")
    (foreign / "nested" / "data.txt").write_text("precious")
    with pytest.raises(IsADirectoryError, match=r"foreign\.ckpt is a directory that is not only a sharded"):
        _remove_sharded_dir(str(foreign))
    # replacing it with a new sharded checkpoint refuses before anything moves
    new = tmp_path / "new.partial"
    new.mkdir()
    (new / "meta.pt").write_bytes(b"new")
    with pytest.raises(IsADirectoryError, match="nested"):
        _replace_dir(str(new), str(foreign))
    assert (foreign / "nested" / "data.txt").read_text() == "precious" and (new / "meta.pt").exists()


@pytest.mark.parametrize(("path", "allowed"), [
    ("memory://run/ck/epoch=1.ckpt", True),
    ("memory://run/ck/sub/epoch=1.ckpt", True),
    ("memory://run/ck/../elsewhere.ckpt", False),  # object stores do not resolve "..": refused outright
    ("memory://run/ck-other/epoch=1.ckpt", False),  # a sibling whose name starts the same
    ("memory://run/ck/notes.txt", False),  # not a checkpoint file
    ("/tmp/epoch=1.ckpt", False),  # a local path while dirpath is a URL
    ("nosuchprotocol://run/ck/epoch=1.ckpt", False),  # unknown protocol: refused, not an error
    ("s3://run/ck/epoch=1.ckpt", False),  # another protocol (whether or not s3fs is installed)
    (7, False),
])
def test_which_paths_count_as_inside_a_remote_dirpath(path: Any, allowed: bool) -> None:
    from torchbolt.utilities._owned_paths import resolve_owned_path

    resolved, reason = resolve_owned_path(path, "memory://run/ck", ".ckpt")
    assert (resolved == path) if allowed else (resolved is None and reason), reason
