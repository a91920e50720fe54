"""``TorchCheckpointIO``: ``torch.save``/``torch.load`` on local paths and fsspec URLs."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch

from torchbolt.plugins.io.checkpoint_io import _PATH, CheckpointIO
from torchbolt.utilities.cloud_io import _atomic_write, _is_local, _load, get_filesystem


class TorchCheckpointIO(CheckpointIO):
    """Writes checkpoints atomically (a complete file or nothing) and loads them safely.

    Saving serializes straight into a temporary file next to the target, fsyncs it and renames it
    over the target (then fsyncs the directory), so a crash at any moment leaves the previous file
    or the new complete one. Loading uses ``torch.load(weights_only=True)``: tensors, numbers,
    strings, containers and a few plain data types only (see :mod:`torchbolt.utilities.safe_loading`),
    so a checkpoint can never run code. Pass ``weights_only=False`` only for files you trust. Every
    zip record's CRC-32 is checked against the bytes read, so a file damaged after it was written
    raises instead of loading changed weights.

    Args:
        verify_checksums: check the CRC-32s on load. ``None`` (default): yes, unless the environment
            variable ``TORCHBOLT_VERIFY_CHECKPOINTS`` is ``0``.

    Example::

        io = TorchCheckpointIO()
        io.save_checkpoint({"state_dict": model.state_dict()}, "memory://ckpts/model.ckpt")
        state = io.load_checkpoint("memory://ckpts/model.ckpt")
    """

    def __init__(self, verify_checksums: bool | None = None) -> None:
        if verify_checksums is not None and not isinstance(verify_checksums, bool):
            raise TypeError(f"`TorchCheckpointIO(verify_checksums={verify_checksums!r})` is invalid: expected True,"
                            " False or None.")
        self.verify_checksums = verify_checksums

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to ``path`` atomically.

        Raises:
            TypeError: ``storage_options`` were given (this plug-in takes none).
            OSError: the write failed (no space, no permission, ...); earlier files are untouched.
        """
        if storage_options is not None:
            raise TypeError(
                "`Trainer.save_checkpoint(..., storage_options=...)` is not supported by `TorchCheckpointIO`;"
                " pass a custom `CheckpointIO` plug-in that accepts them."
            )
        _atomic_write(path, lambda f: torch.save(checkpoint, f))  # type: ignore[arg-type]  # any object with `write`

    def load_checkpoint(self, path: _PATH, map_location: Any | None = None, weights_only: bool | None = None
                        ) -> dict[str, Any]:
        """Read the checkpoint at ``path`` (tensors land on the CPU unless ``map_location`` says otherwise).

        Raises:
            FileNotFoundError: no file at ``path``.
            pickle.UnpicklingError: the file holds objects a weights-only load refuses.
            ChecksumMismatchError: (a ``CorruptCheckpointError``) the file's bytes changed after it was written.
            CorruptCheckpointError: the file is truncated or not a checkpoint.
        """
        return _load(path, map_location=map_location if map_location is not None else "cpu",
                     weights_only=weights_only, verify=getattr(self, "verify_checksums", None))

    def remove_checkpoint(self, path: _PATH) -> None:
        """Delete the checkpoint file (or symlink: the link itself, never its target) at ``path``.

        Nothing happens when there is none (another process may have removed it first).

        Raises:
            IsADirectoryError: ``path`` is a directory. Checkpoints written by this plug-in are files,
                and a directory is never deleted (let alone recursively): it is left untouched.
        """
        fs = get_filesystem(path)
        if _is_local(fs):
            local = fs._strip_protocol(str(path))
            if not os.path.islink(local) and os.path.isdir(local):
                raise IsADirectoryError(_directory_refusal(local))
            with contextlib.suppress(FileNotFoundError):
                os.remove(local)
            return
        name = str(path)
        if fs.isdir(name):
            raise IsADirectoryError(_directory_refusal(name))
        with contextlib.suppress(FileNotFoundError):
            fs.rm(name)


def _directory_refusal(path: str) -> str:
    return (
        f"{path} is a directory, not a checkpoint file. `remove_checkpoint` never deletes a directory, so it"
        " was left untouched; remove it yourself if it is no longer needed."
    )
