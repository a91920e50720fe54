"""Checkpoint files: atomic writes, safe loads, clear errors, and earlier files kept on failure."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

import torchbolt as pl
from torchbolt.callbacks import ModelCheckpoint
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.plugins.io import TorchCheckpointIO
from torchbolt.utilities.cloud_io import _atomic_save, _load
from torchbolt.utilities.exceptions import CorruptCheckpointError


class _Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.marker}",))


def _bytes(obj: Any, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


def test_checkpoint_roundtrips_through_an_in_memory_fsspec_url() -> None:
    checkpoint_io = TorchCheckpointIO()
    checkpoint_io.save_checkpoint({"state_dict": {"w": torch.arange(3.0)}}, "memory://ckpts/a/model.ckpt")
    loaded = checkpoint_io.load_checkpoint("memory://ckpts/a/model.ckpt")
    assert torch.equal(loaded["state_dict"]["w"], torch.arange(3.0))
    checkpoint_io.remove_checkpoint("memory://ckpts/a/model.ckpt")
    with pytest.raises(FileNotFoundError, match=r"memory://ckpts/a/model\.ckpt"):
        checkpoint_io.load_checkpoint("memory://ckpts/a/model.ckpt")


def test_save_replaces_an_existing_file_whole_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "model.ckpt"
    _atomic_save(_bytes({"v": 1}), target)
    _atomic_save(_bytes({"v": 2}), target)
    assert _load(target) == {"v": 2}
    assert os.listdir(target.parent) == ["model.ckpt"]


@pytest.mark.parametrize("fmt", ["zip", "legacy-torch"])
def test_loading_a_malicious_checkpoint_refuses_it_without_running_code(tmp_path: Path, fmt: str) -> None:
    marker = tmp_path / "pwned"
    payload = {"state_dict": {}, "hyper_parameters": {"x": _Payload(marker)}}
    path = tmp_path / "evil.ckpt"
    path.write_bytes(_bytes(payload, _use_new_zipfile_serialization=fmt == "zip"))
    with pytest.raises(pickle.UnpicklingError, match=r"Refused to load .*evil\.ckpt.*posix\.system.*weights_only=False"):
        TorchCheckpointIO().load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_plain_pickle_with_a_payload_is_rejected_without_running_code(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": {}, "x": _Payload(marker)}, protocol=protocol))
    with pytest.raises((pickle.UnpicklingError, CorruptCheckpointError), match=r"evil\.ckpt"):
        TorchCheckpointIO().load_checkpoint(path)
    assert not marker.exists()


def test_weights_only_false_loads_a_trusted_checkpoint_with_other_objects(tmp_path: Path) -> None:
    from fractions import Fraction

    path = tmp_path / "trusted.ckpt"
    path.write_bytes(_bytes({"ratio": Fraction(1, 3)}))
    with pytest.raises(pickle.UnpicklingError, match=r"fractions\.Fraction"):
        _load(path)
    assert _load(path, weights_only=False) == {"ratio": Fraction(1, 3)}


@pytest.mark.parametrize("damage", ["truncated", "random-bytes", "empty"])
def test_damaged_checkpoint_gives_an_error_naming_the_file(tmp_path: Path, damage: str) -> None:
    data = _bytes({"state_dict": {"w": torch.randn(100)}})
    path = tmp_path / f"{damage}.ckpt"
    path.write_bytes({"truncated": data[: len(data) // 2], "random-bytes": os.urandom(500), "empty": b""}[damage])
    with pytest.raises(CorruptCheckpointError, match=rf"{damage}\.ckpt is not a readable checkpoint"):
        TorchCheckpointIO().load_checkpoint(path)


def test_missing_checkpoint_raises_file_not_found_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing\.ckpt"):
        _load(tmp_path / "nothing.ckpt")


def test_remove_checkpoint_removes_a_dangling_symlink(tmp_path: Path) -> None:
    link = tmp_path / "last.ckpt"
    os.symlink(tmp_path / "gone.ckpt", link)
    TorchCheckpointIO().remove_checkpoint(link)
    assert not os.path.lexists(link)


# ---------------------------------------------------------------------- failing writes (real errors)
_FILL_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch
    import torchbolt as pl
    from torchbolt.callbacks import ModelCheckpoint
    from torchbolt.demos.boring_classes import BoringModel
    from torchbolt.utilities.cloud_io import TEMP_FILE_PATTERN, _load

    class Wide(BoringModel):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(32, 2)
            self.register_buffer("ballast", torch.zeros(60_000))  # ~240 kB per checkpoint

    directory = sys.argv[1]
    checkpoint = ModelCheckpoint(dirpath=directory, every_n_train_steps=1, save_top_k=-1)
    trainer = pl.Trainer(max_steps=50, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, callbacks=[checkpoint])
    error = None
    try:
        trainer.fit(Wide())
    except OSError as e:
        error = {"type": type(e).__name__, "errno": e.errno, "message": str(e)}
    names = sorted(os.listdir(directory))
    loads = {n: _load(os.path.join(directory, n))["global_step"] for n in names if not TEMP_FILE_PATTERN.match(n)}
    print("RESULT " + json.dumps({"error": error, "files": names, "loads": loads,
                                  "best": os.path.basename(checkpoint.best_model_path)}))
""")


def _run_fill_script(cmd_prefix: list[str], directory: str, env: dict[str, str], workdir: Path,
                     **kwargs: Any) -> dict[str, Any]:
    script = workdir / "fill.py"
    script.write_text(_FILL_SCRIPT)
    os.chmod(script, 0o644)
    proc = subprocess.run([*cmd_prefix, sys.executable, str(script), directory], env=env, capture_output=True,
                          text=True, timeout=240, cwd=workdir, **kwargs)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt && umount /mnt"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(sys.platform != "linux" or not _can_mount_tmpfs(),
                    reason="needs Linux user namespaces (unshare -rm) to mount a small tmpfs")
def test_full_disk_raises_a_clear_error_and_keeps_earlier_checkpoints(tmp_path: Path,
                                                                    subprocess_env: dict[str, str]) -> None:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    # a private mount namespace: a real 1 MiB filesystem that fills up after a few checkpoints
    prefix = ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=1m tmpfs "{mount}" && exec "$0" "$@"']
    result = _run_fill_script(prefix, str(mount), subprocess_env, tmp_path)
    error = result["error"]
    assert error is not None and error["errno"] == 28  # ENOSPC
    assert "no space left on device" in error["message"] and str(mount) in error["message"]
    assert "every checkpoint written before is intact" in error["message"]
    assert len(result["loads"]) >= 2
    assert result["files"] == sorted(result["loads"])  # no partial or temporary file left
    # the callback's bookkeeping points at the newest complete file, not at the one that failed
    assert result["loads"][result["best"]] == max(result["loads"].values())


def _make_read_only(directory: Path) -> None:
    if os.geteuid() != 0:
        os.chmod(directory, 0o555)
        return
    # root ignores file modes; the immutable attribute stops root too
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(directory)],
                                                         capture_output=True).returncode != 0:
        pytest.skip("running as root on a filesystem without `chattr +i`: cannot make a directory unwritable")


def _make_writable(directory: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(directory)], capture_output=True)
    os.chmod(directory, 0o755)


class _Ballast(BoringModel):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("ballast", torch.zeros(1000))


def test_permission_error_raises_a_clear_error_and_keeps_earlier_checkpoints(tmp_path: Path) -> None:
    directory = tmp_path / "ckpts"
    directory.mkdir()
    _atomic_save(_bytes({"global_step": 1}), directory / "earlier.ckpt")
    checkpoint = ModelCheckpoint(dirpath=directory, every_n_train_steps=1)
    trainer = pl.Trainer(max_steps=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, callbacks=[checkpoint])
    _make_read_only(directory)
    try:
        with pytest.raises(PermissionError, match=r"Could not write the checkpoint .*ckpts/epoch=0-step=1\.ckpt: "
                                                  r"(permission denied|operation not permitted)\. Nothing was replaced"):
            trainer.fit(_Ballast())
    finally:
        _make_writable(directory)
    assert os.listdir(directory) == ["earlier.ckpt"]
    assert _load(directory / "earlier.ckpt") == {"global_step": 1}
    assert checkpoint.best_model_path == ""
