"""Resolve ``ckpt_path=`` of ``fit``/``validate``/``test``/``predict`` to a file."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from torchbolt.trainer.states import TrainerFn
from torchbolt.utilities.exceptions import MisconfigurationException

if TYPE_CHECKING:
    from torchbolt.trainer.trainer import Trainer


def resolve_ckpt_path(trainer: Trainer, fn: TrainerFn, ckpt_path: Any) -> str | None:
    """``None`` (no restore; a requeued SLURM job resumes from its ``hpc`` checkpoint), a path, ``"last"``,
    ``"best"`` or ``"hpc"`` -> the checkpoint file to load.

    Raises:
        MisconfigurationException: ``"best"``/``"last"`` when no checkpoint callback recorded one.
    """
    if ckpt_path is None:
        return _slurm_requeue_resume_path(trainer, fn)
    if isinstance(ckpt_path, os.PathLike):
        ckpt_path = os.fspath(ckpt_path)
    if not isinstance(ckpt_path, str):
        raise MisconfigurationException(f"`ckpt_path={ckpt_path!r}`: pass a path, 'last' or 'best'.")
    if ckpt_path == "hpc":
        from torchbolt.trainer.signals import hpc_resume_path

        path = hpc_resume_path(trainer.default_root_dir)
        if path is None:
            raise MisconfigurationException(
                f'`.{fn.value}(ckpt_path="hpc")` is set but no `hpc_ckpt_<n>.ckpt` was found in'
                f" {trainer.default_root_dir!r} (they are saved when the run receives the requeue signal)."
            )
        return path
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


def _slurm_requeue_resume_path(trainer: Trainer, fn: TrainerFn) -> str | None:
    """A requeued SLURM job resumes ``fit`` from the checkpoint its predecessor saved on the requeue signal."""
    if fn != TrainerFn.FITTING:
        return None
    from torchbolt.plugins.environments.slurm import SLURMEnvironment

    if not SLURMEnvironment.detect():
        return None
    from torchbolt.trainer.signals import hpc_resume_path

    path = hpc_resume_path(trainer.default_root_dir)
    if path is not None:
        from torchbolt.utilities.rank_zero import rank_zero_info

        rank_zero_info(f"Resuming the requeued SLURM job from {path}")
    return path
