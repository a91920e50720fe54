"""Resolve ``ckpt_path=`` of ``fit``/``validate``/``test``/``predict`` to a file."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from torchbolt.trainer.states import TrainerFn
from torchbolt.utilities.exceptions import MisconfigurationException

if TYPE_CHECKING:
    from torchbolt.trainer.trainer import Trainer


def resolve_ckpt_path(trainer: Trainer, fn: TrainerFn, ckpt_path: Any) -> str | None:
    """``None`` (no restore), a path, ``"last"`` or ``"best"`` -> the checkpoint file to load.

    Raises:
        MisconfigurationException: ``"best"``/``"last"`` when no checkpoint callback recorded one.
    """
    if ckpt_path is None:
        return None
    if isinstance(ckpt_path, os.PathLike):
        ckpt_path = os.fspath(ckpt_path)
    if not isinstance(ckpt_path, str):
        raise MisconfigurationException(f"`ckpt_path={ckpt_path!r}`: pass a path, 'last' or 'best'.")
    if ckpt_path in ("best", "last"):
        callback = trainer.checkpoint_callback
        attr = "best_model_path" if ckpt_path == "best" else "last_model_path"
        path = getattr(callback, attr, None) if callback is not None else None
        if not path:
            raise MisconfigurationException(
                f'`.{fn.value}(ckpt_path="{ckpt_path}")` is set but no checkpoint callback has recorded a'
                f" {ckpt_path} checkpoint. Pass a path, or enable checkpointing with a `ModelCheckpoint`."
            )
        return str(path)
    return ckpt_path
