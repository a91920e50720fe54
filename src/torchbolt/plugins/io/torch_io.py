"""``TorchCheckpointIO``: ``torch.save``/``torch.load`` on local paths and fsspec URLs."""

from __future__ import annotations

import io
from typing import Any

import torch

from torchbolt.plugins.io.checkpoint_io import _PATH, CheckpointIO
from torchbolt.utilities.cloud_io import _atomic_save, _load, get_filesystem


class TorchCheckpointIO(CheckpointIO):
    """Writes checkpoints atomically (a complete file or nothing) and loads them safely.

    Loading uses ``torch.load(weights_only=True)``: tensors, numbers, strings and containers only,
    so a checkpoint can never run code. Pass ``weights_only=False`` only for files you trust.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(
                "`Trainer.save_checkpoint(..., storage_options=...)` is not supported by `TorchCheckpointIO`;"
                " pass a custom `CheckpointIO` plug-in that accepts them."
            )
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        _atomic_save(buffer.getvalue(), path)

    def load_checkpoint(self, path: _PATH, map_location: Any | None = None, weights_only: bool | None = None
                        ) -> dict[str, Any]:
        fs = get_filesystem(path)
        if not fs.exists(str(path)):
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return _load(path, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path: _PATH) -> None:
        fs = get_filesystem(path)
        if fs.exists(str(path)):
            fs.rm(str(path), recursive=True)

