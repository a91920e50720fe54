"""``CheckpointIO``: how a checkpoint dict becomes bytes on some storage, and back."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Union

_PATH = Union[str, Path, "os.PathLike[str]"]


class CheckpointIO(ABC):
    """Saves, loads and removes checkpoint files. Strategies own one; callbacks never touch files directly."""

    @abstractmethod
    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to ``path``."""

    @abstractmethod
    def load_checkpoint(self, path: _PATH, map_location: Any | None = None, weights_only: bool | None = None
                        ) -> dict[str, Any]:
        """Read the checkpoint dict at ``path``."""

    @abstractmethod
    def remove_checkpoint(self, path: _PATH) -> None:
        """Delete the checkpoint at ``path``: that file (a symlink as a link), and no directory recursively."""

    def teardown(self) -> None:
        """Wait for pending writes and release resources."""
