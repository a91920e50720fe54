"""Resolve ``ckpt_path=`` of ``fit``/``validate``/``test``/``predict`` to a file (Lightning's rules).

* a path or URL is used as given;
* ``"best"``: the first checkpoint callback's ``best_model_path``;
* ``"last"``: the newest ``last*.ckpt`` in the ``ModelCheckpoint`` directories, or the
  ``OnExceptionCheckpoint`` file, whichever was written last; a warning and no restore when
  there is none (so it can be set before the first run);
* ``None`` with an ``OnExceptionCheckpoint`` while fitting: as ``"last"``;
* ``None`` in ``validate``/``test``/``predict`` called without a model after a fit: as ``"best"``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from torchbolt.trainer.states import TrainerFn
from torchbolt.utilities.cloud_io import get_filesystem
from torchbolt.utilities.rank_zero import rank_zero_warn

if TYPE_CHECKING:
    from torchbolt.trainer.trainer import Trainer


def resolve_ckpt_path(trainer: Trainer, fn: TrainerFn, ckpt_path: Any, model_provided: bool = True) -> str | None:
    """``None``, a path, ``"last"``, ``"best"`` or ``"hpc"`` -> the checkpoint file to load (or ``None``).

    ``model_provided``: the entry point was given a model (``False``: it reuses the previous run's model).

    Raises:
        ValueError: ``"best"`` without a checkpoint callback that recorded a best model.
        TypeError: ``ckpt_path`` is not a path or one of the special strings.
    """
    from torchbolt.callbacks.on_exception_checkpoint import OnExceptionCheckpoint

    if isinstance(ckpt_path, os.PathLike):
        ckpt_path = os.fspath(ckpt_path)
    if ckpt_path is not None and not isinstance(ckpt_path, str):
        raise TypeError(f"`ckpt_path={ckpt_path!r}`: pass a path, 'last', 'best' or 'hpc'.")
    name = fn.value
    on_exception = [cb for cb in trainer.callbacks if isinstance(cb, OnExceptionCheckpoint)]
    if ckpt_path is None and on_exception and fn == TrainerFn.FITTING:
        ckpt_path = "last"
        rank_zero_warn(
            f"`.{name}(ckpt_path=None)` was called with an `OnExceptionCheckpoint` callback: the newest last or"
            f" on-exception checkpoint, if any, will be resumed from. Pass `.{name}(ckpt_path=...)` to choose"
            " explicitly and silence this warning."
        )
    if ckpt_path is None and not model_provided and fn != TrainerFn.FITTING:
        ckpt_path = "best"
        rank_zero_warn(
            f"`.{name}(ckpt_path=None)` was called without a model. The best model of the previous `fit` call will"
            f" be used. You can pass `.{name}(ckpt_path='best')` to use the best model or `.{name}(ckpt_path='last')`"
            " to use the last model. If you pass a value, this warning will be silenced."
        )
    if ckpt_path is None:
        return _slurm_requeue_resume_path(trainer, fn)
    if ckpt_path == "hpc":
        return _hpc(trainer, name)
    if ckpt_path == "best":
        return _best(trainer, name)
    if ckpt_path == "last":
        return _last(trainer, name, on_exception)
    return str(ckpt_path)


def _best(trainer: Trainer, name: str) -> str:
    callbacks = trainer.checkpoint_callbacks
    if len(callbacks) > 1:
        rank_zero_warn(
            f'`.{name}(ckpt_path="best")` is called with Trainer configured with multiple `ModelCheckpoint`'
            " callbacks. It will use the best checkpoint path from first checkpoint callback."
        )
    callback = trainer.checkpoint_callback
    if callback is None:
        raise ValueError(f'`.{name}(ckpt_path="best")` is set but `ModelCheckpoint` is not configured.')
    path = getattr(callback, "best_model_path", None)
    if not path:
        if trainer.fast_dev_run:
            raise ValueError(
                f'You cannot execute `.{name}(ckpt_path="best")` with `fast_dev_run=True`. Please pass an exact'
                f" checkpoint path to `.{name}(ckpt_path=...)`"
            )
        raise ValueError(
            f'`.{name}(ckpt_path="best")` is set but `ModelCheckpoint` is not configured to save the best model'
            " (no checkpoint was saved yet, or `save_top_k=0`). Pass a path instead."
        )
    return str(path)


def _last(trainer: Trainer, name: str, on_exception: list[Any]) -> str | None:
    candidates = {cb.ckpt_path for cb in on_exception}
    for callback in trainer.checkpoint_callbacks:
        find = getattr(callback, "_find_last_checkpoints", None)
        if callable(find):
            candidates |= find(trainer)
    times: dict[str, float] = {}
    for path in candidates:
        fs = get_filesystem(path)
        if fs.exists(path):
            modified = fs.modified(path)
            times[path] = modified.timestamp() if hasattr(modified, "timestamp") else float(modified)
    if not times:
        # not an error, so that it can be set once before the first run
        rank_zero_warn(
            f'.{name}(ckpt_path="last") is set, but there is no last checkpoint available. No checkpoint will be'
            " loaded. HINT: Set `ModelCheckpoint(..., save_last=True)`."
        )
        return None
    return max(times, key=lambda p: times[p])

def _hpc(trainer: Trainer, name: str) -> str:
    from torchbolt.trainer.signals import hpc_resume_path

    path = hpc_resume_path(trainer.default_root_dir)
    if path is None:
        raise ValueError(
            f'`.{name}(ckpt_path="hpc")` is set but no `hpc_ckpt_<n>.ckpt` was found in'
            f" {trainer.default_root_dir!r} (they are saved when the run receives the requeue signal)."
        )
    return path


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
