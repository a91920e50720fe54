"""Resolve ``ckpt_path=`` of ``fit``/``validate``/``test``/``predict`` to a file (Lightning's rules).

* a path or URL is used as given;
* ``"best"``: the first checkpoint callback's ``best_model_path``;
* ``"last"``: the newest ``last*.ckpt`` in the ``ModelCheckpoint`` directories, or the
  ``OnExceptionCheckpoint`` file, whichever was written last, unless a checkpoint of those
  directories written at the same time or later holds further training progress (a crash between
  two writes): then that one (see :func:`newest_resumable_checkpoint`); a warning and no restore
  when there is none (so it can be set before the first run);
* ``None`` with an ``OnExceptionCheckpoint`` while fitting: as ``"last"``;
* ``None`` in ``validate``/``test``/``predict`` called without a model after a fit: as ``"best"``;
* ``None`` in ``fit`` after torchrun restarted the workers: the newest complete checkpoint of this run
  (:mod:`torchbolt.trainer.elastic_resume`), before the rules above; when there is none, and in other
  runs, they apply; in a requeued SLURM job: its newest ``hpc_ckpt_<n>.ckpt``.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

import torch

from torchbolt.trainer.states import TrainerFn
from torchbolt.utilities.cloud_io import get_filesystem
from torchbolt.utilities.rank_zero import rank_zero_warn

if TYPE_CHECKING:
    from torchbolt.trainer.trainer import Trainer


def resolve_ckpt_path(trainer: Trainer, fn: TrainerFn, ckpt_path: Any, model_provided: bool = True,
                      weights_only: bool | None = None, environment: Any = None) -> str | None:
    """``None``, a path, ``"last"``, ``"best"`` or ``"hpc"`` -> the checkpoint file to load (or ``None``).

    ``model_provided``: the entry point was given a model (``False``: it reuses the previous run's model).
    ``weights_only``: how candidate files are read when ``"last"`` has to compare several.
    ``environment``: the run's cluster environment (a restarted torchrun worker group resumes by itself).

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
    if ckpt_path is None:
        from torchbolt.trainer.elastic_resume import elastic_resume_path

        # a torchrun restart of this run resumes by itself (self-healing), before any other default
        restarted_from = elastic_resume_path(trainer, fn, environment, weights_only)
        if restarted_from is not None:
            return restarted_from
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
        return _last(trainer, name, on_exception, weights_only, resuming=fn == TrainerFn.FITTING)
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


def _last(trainer: Trainer, name: str, on_exception: list[Any], weights_only: bool | None = None,
          resuming: bool = True) -> str | None:
    # "last"-like files: what the user asked for; when resuming `fit`, every other complete checkpoint of the
    # ModelCheckpoint directories is a candidate too, because a crash between two writes of the same step
    # (top-k file renamed into place, `last` not yet written) leaves the newest state only there.
    # `validate`/`test`/`predict` load only a `last` file, as Lightning does: with none, nothing is loaded.
    last_like = {_normalized(cb.ckpt_path) for cb in on_exception}
    others: set[str] = set()
    for callback in trainer.checkpoint_callbacks:
        find = getattr(callback, "_find_last_checkpoints", None)
        if callable(find):
            last_like |= {_normalized(p) for p in find(trainer)}
        find_all = getattr(callback, "_find_resumable_checkpoints", None)
        # only a callback that writes `last` can have left a step's newest state in its top-k file alone;
        # without `save_last` there is no last checkpoint, as in Lightning (a warning and no restore); and only
        # a resumed fit looks past `last` files (evaluation loads a `last` file or nothing, as in Lightning)
        if resuming and callable(find_all) and getattr(callback, "save_last", False):
            others |= {_normalized(p) for p in find_all(trainer)}
    choice: str | None = None
    if trainer.is_global_zero:
        # one process reads the candidates and every process loads what it chose
        choice = newest_resumable_checkpoint(trainer, last_like, others - last_like, weights_only)
    choice = trainer.strategy.broadcast(choice)
    if choice is None:
        # not an error, so that it can be set once before the first run
        rank_zero_warn(
            f'.{name}(ckpt_path="last") is set, but there is no last checkpoint available. No checkpoint will be'
            " loaded. HINT: Set `ModelCheckpoint(..., save_last=True)`."
        )
    return choice


def newest_resumable_checkpoint(trainer: Trainer, last_like: set[str], others: set[str],
                                weights_only: bool | None = None) -> str | None:
    """The checkpoint ``ckpt_path="last"`` resumes: the furthest training progress among the newest
    ``last``-like file (``last*.ckpt``, the ``OnExceptionCheckpoint`` file) and the other checkpoints
    (``others``: top-k files) written at the same time or after it.

    * "Furthest" is read from inside each file (:func:`training_progress`: global step, training
      batches done, epoch and the phase within it), not from its modification time, so a top-k file
      whose ``last`` companion was never written (the process died between the two writes) wins over
      an older ``last``; at equal progress the ``last``-like file wins.
    * Modification times only set the starting line: a top-k file older than the newest ``last`` file
      belongs to an earlier part of the run, or to a run that was rolled back by resuming from an older
      checkpoint, and is not a candidate even if its step is higher.
    * Files that cannot be read (damaged, weights-only top-k files, unsafe to unpickle under
      ``weights_only``) are skipped with a warning. When no candidate can be read the newest file is
      returned, so that loading it raises an error that names the damage instead of training from zero.

    Returns:
        The path, or ``None`` when no candidate file exists.
    """
    times = {path: t for path in last_like | others if (t := _modified(path)) is not None}
    if not times:
        return None
    skipped: list[str] = []
    progress: dict[str, tuple[int, int, int, int]] = {}

    def read(path: str, need_training_state: bool) -> bool:
        checkpoint, problem = _read_for_progress(trainer, path, weights_only)
        if checkpoint is not None and need_training_state and "optimizer_states" not in checkpoint:
            problem = "it holds only weights"
        if checkpoint is None or problem:
            skipped.append(f"{path} ({problem})")
            return False
        progress[path] = training_progress(checkpoint)
        return True

    newest_last = None
    for path in sorted((p for p in times if p in last_like), key=times.__getitem__, reverse=True):
        if read(path, need_training_state=False):
            newest_last = path
            break
    start = times[newest_last] if newest_last is not None else float("-inf")
    for path in sorted((p for p in times if p in others and times[p] >= start), key=times.__getitem__,
                       reverse=True):
        read(path, need_training_state=True)
    if skipped:
        rank_zero_warn(
            'ckpt_path="last": skipped checkpoint files that cannot be resumed from: ' + "; ".join(skipped) + "."
        )
    if not progress:
        return max(times, key=times.__getitem__)
    chosen = max(progress, key=lambda p: (progress[p], p in last_like, times[p]))
    if chosen not in last_like:
        step = progress[chosen][0]
        before = (f"the newest last checkpoint {newest_last} (global step {progress[newest_last][0]})"
                  if newest_last is not None else "any last checkpoint")
        rank_zero_warn(
            f'ckpt_path="last": resuming from {chosen} (global step {step}), which holds later training progress'
            f" than {before}: the previous run most likely stopped between writing it and writing `last`."
        )
    return chosen


def training_progress(checkpoint: dict[str, Any]) -> tuple[int, int, int, int]:
    """How far the run that wrote ``checkpoint`` had trained, as a tuple that orders checkpoints of one
    run: ``(global_step, training batches done in total, epoch, phase within the epoch)``.

    The phase tells apart files written at the same batch: during its post-batch work (1), after the
    validation due there (2), after the batch (3), in the epoch-end hooks (4); 0 before the epoch
    started. Checkpoints of other tools (PyTorch Lightning) give their step, batch and epoch counters
    and phase 0.
    """
    fit_loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    step = int(checkpoint.get("global_step", 0))
    ours = (fit_loop.get("torchbolt") or {}).get("progress")
    if ours:
        if ours.get("epoch_ending"):
            phase = 4
        elif ours.get("in_batch_tail"):
            phase = 2 if ours.get("tail_validated") else 1
        else:
            phase = 3 if ours.get("epoch_started") else 0
        return step, int(ours.get("total_batch_idx", -1)) + 1, int(ours.get("current_epoch", 0)), phase
    batches = ((fit_loop.get("epoch_loop.batch_progress") or {}).get("total") or {}).get("processed", 0)
    return step, int(batches), int(checkpoint.get("epoch", 0)), 0


def _normalized(path: str) -> str:
    # the same local file may be spelled differently by two callbacks ("a/./b.ckpt"); URLs stay as given
    return path if "://" in path else os.path.normpath(path)


def _modified(path: str) -> float | None:
    """The modification time of ``path`` in seconds, or ``None`` when it does not exist."""
    fs = get_filesystem(path)
    try:
        if not fs.exists(path):
            return None
        modified = fs.modified(path)
    except (OSError, NotImplementedError):
        # a filesystem without modification times: every file counts as equally new
        return 0.0 if fs.exists(path) else None
    return modified.timestamp() if hasattr(modified, "timestamp") else float(modified)


def _read_for_progress(trainer: Trainer, path: str, weights_only: bool | None) -> tuple[dict[str, Any] | None, str]:
    """``(checkpoint, "")``, or ``(None, why not)`` when ``path`` cannot be loaded.

    A local file is memory-mapped, so reading the counters of a large checkpoint does not read its
    tensors; other paths (URLs, sharded checkpoint directories) go through the strategy's loader.
    """
    safe = weights_only is not False
    loaded: Any = None
    if os.path.isfile(path):
        # a format mmap cannot read (or a damaged file) goes on to the full loader, which decides
        with contextlib.suppress(Exception):
            loaded = torch.load(path, map_location="cpu", weights_only=safe, mmap=True)
    if loaded is None:
        try:
            loaded = trainer.strategy.load_checkpoint(path, weights_only=safe)
        except Exception as e:  # any failure to load means this file is not a candidate
            detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            return None, f"{type(e).__name__}: {detail}" if detail else type(e).__name__
    if not isinstance(loaded, dict):
        return None, f"it holds a {type(loaded).__name__}, not a checkpoint dict"
    return loaded, ""


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
