"""``TorchCheckpointIO``: ``torch.save``/``torch.load`` on local paths and fsspec URLs."""

from __future__ import annotations

import os
import shutil
from typing import Any

import torch

from torchbolt.plugins.io.checkpoint_io import _PATH, CheckpointIO
from torchbolt.utilities.cloud_io import _atomic_write, _is_local, _load, get_filesystem


class TorchCheckpointIO(CheckpointIO):
    """Writes checkpoints atomically (a complete file or nothing) and loads them safely.

    Saving serializes straight into a temporary file next to the target, fsyncs it and renames it
    over the target (then fsyncs the directory), so a crash at any moment leaves the previous file
    or the new complete one. Loading uses ``torch.load(weights_only=True)``: tensors, numbers,
    strings and containers only, so a checkpoint can never run code. Pass ``weights_only=False``
    only for files you trust.

    Example::

        io = TorchCheckpointIO()
        io.save_checkpoint({"state_dict": model.state_dict()}, "memory://ckpts/model.ckpt")
        state = io.load_checkpoint("memory://ckpts/model.ckpt")
    """

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
            CorruptCheckpointError: the file is truncated or not a checkpoint.
        """
        return _load(path, map_location=map_location if map_location is not None else "cpu",
                     weights_only=weights_only)

    def remove_checkpoint(self, path: _PATH) -> None:
        """Delete the file (or symlink, or directory) at ``path``; nothing happens when there is none."""
        fs = get_filesystem(path)
        if _is_local(fs):
            local = fs._strip_protocol(str(path))
            if os.path.islink(local) or os.path.isfile(local):
                os.remove(local)
            elif os.path.isdir(local):
                shutil.rmtree(local)
            return
        if fs.exists(str(path)):
            fs.rm(str(path), recursive=True)
