"""Lightning's module path of :class:`~torchbolt.plugins.io.AsyncCheckpointIO` (checkpoints written in a thread)."""

from torchbolt.plugins.io.async_io import AsyncCheckpointIO

__all__ = ["AsyncCheckpointIO"]
