"""``ModelCheckpoint``: save checkpoints during fit, keeping the best ``k`` by a monitored metric.

Every write goes through ``trainer.save_checkpoint`` (so the strategy decides who writes and how:
rank 0, sharded, ...) and is atomic. A checkpoint that leaves the top ``k`` is deleted only after
the new one is complete, and a failed write leaves the files and this callback's bookkeeping as
they were. With ``async_save=True`` the writes run on a background thread (``AsyncCheckpointIO``);
deletions and the ``last`` symlink are queued behind them, so the same holds.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
import time
import typing
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from weakref import proxy

import torch
from torch import Tensor

from torchbolt.callbacks import _arguments
from torchbolt.callbacks.checkpoint import Checkpoint
from torchbolt.loggers.logger import Logger
from torchbolt.plugins.io.async_io import (
    AsyncCheckpointIO,
    _after_pending_writes,
    _pending_state,
    wait_for_checkpoint_writes,
)
from torchbolt.utilities._owned_paths import resolve_owned_path
from torchbolt.utilities._temp_files import remove_stale_temp_files
from torchbolt.utilities.cloud_io import _atomic_symlink, _atomic_write, _is_local_path, get_filesystem
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import WarningCache, rank_zero_info, rank_zero_warn
from torchbolt.utilities.states import TrainerFn

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer

_PATH = str | os.PathLike
_warning_cache = WarningCache()


class ModelCheckpoint(Checkpoint):
    r"""Save the model during fit: the best ``save_top_k`` by ``monitor``, and/or the latest.

    Args:
        dirpath: where to save. Default: ``<save_dir>/<name>/<version>/checkpoints`` of the first
            logger (``lightning_logs/version_N/checkpoints``), else ``<default_root_dir>/checkpoints``.
        filename: a template such as ``"{epoch}-{step}-{val_loss:.2f}"`` (default ``"{epoch}-{step}"``),
            filled from the logged metrics plus ``epoch`` and ``step``.
        monitor: the logged metric to rank checkpoints by (``None``: keep the latest).
        verbose: print what is saved.
        save_last: also keep ``last.ckpt`` (``True``), or a symlink to the newest checkpoint (``"link"``).
            As in Lightning 2.6, ``last`` is written at a step where a top-k checkpoint was written (so it
            matches that file), and once at the end of a fit that wrote no checkpoint at all
            (e.g. ``save_top_k=0``); a step whose metric did not enter the top k leaves it unchanged.
        save_top_k: how many best checkpoints to keep (``-1`` all, ``0`` none).
        save_on_exception: when the fit raises, write a checkpoint of the state at that moment (named by
            ``filename`` as usual, plus ``last`` with ``save_last``), unless this step was already saved.
        save_weights_only: save only the weights (such a file cannot resume a fit).
        mode: ``"min"`` or ``"max"``: whether a smaller or larger ``monitor`` is better.
        auto_insert_metric_name: write ``name=value`` for each template field.
        every_n_train_steps: save every this many optimizer steps (``0``/``None``: not by steps).
        train_time_interval: save after this much wall time (a ``timedelta``).
        every_n_epochs: save every this many epochs (default 1 when no other trigger is set).
        save_on_train_epoch_end: save at the end of the training epoch instead of after validation.
        enable_version_counter: add ``-v1``, ``-v2``... instead of overwriting an existing file.
        async_save: write checkpoints on a background thread: the training step waits only for a
            copy of the state in host memory. It wraps the strategy's ``CheckpointIO`` in
            :class:`~torchbolt.plugins.io.AsyncCheckpointIO` (so every write of the trainer becomes
            asynchronous). A file named by ``best_model_path``/``last_model_path`` may still be in
            flight during the fit (for at most one save interval); ``fit`` returns once it is on disk.

    Raises:
        MisconfigurationException: for ``save_top_k < -1``, negative intervals, several triggers at
            once, ``save_top_k > 1`` without ``monitor``, or an unknown ``mode``.

    Example::

        checkpoint = ModelCheckpoint(monitor="val_loss", filename="{epoch}-{val_loss:.2f}", save_top_k=3)
        trainer = Trainer(callbacks=[checkpoint])
        trainer.fit(model)
        checkpoint.best_model_path
    """

    CHECKPOINT_JOIN_CHAR = "-"
    CHECKPOINT_EQUALS_CHAR = "="
    CHECKPOINT_NAME_LAST = "last"
    FILE_EXTENSION = ".ckpt"
    STARTING_VERSION = 1

    def __init__(
        self,
        dirpath: _PATH | None = None,
        filename: str | None = None,
        monitor: str | None = None,
        verbose: bool = False,
        save_last: bool | Literal["link"] | None = None,
        save_top_k: int = 1,
        save_on_exception: bool = False,
        save_weights_only: bool = False,
        mode: str = "min",
        auto_insert_metric_name: bool = True,
        every_n_train_steps: int | None = None,
        train_time_interval: timedelta | None = None,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = None,
        enable_version_counter: bool = True,
        async_save: bool = False,
    ) -> None:
        super().__init__()
        if save_last not in (None, True, False, "link"):
            raise MisconfigurationException(f"`ModelCheckpoint(save_last={save_last!r})`: use True, False or 'link'.")
        if mode not in ("min", "max"):
            raise MisconfigurationException(f"`mode` can be min, max but got {mode}")
        self.monitor = monitor
        self.verbose = verbose
        self.save_last = save_last
        self.save_top_k = save_top_k
        self.save_on_exception = bool(save_on_exception)
        self.save_weights_only = save_weights_only
        self.auto_insert_metric_name = auto_insert_metric_name
        self.mode = mode
        self._save_on_train_epoch_end = save_on_train_epoch_end
        self._enable_version_counter = enable_version_counter
        self.async_save = async_save
        self._last_global_step_saved = 0  # nothing to save before the first step
        self._last_time_checked: float | None = None
        # a step- or time-triggered save that waits for the validation after it (the monitored value is a
        # validation metric not logged yet, or about to be refreshed)
        self._defer_save_until_validation = False
        self._validated_this_fit = False
        self.current_score: Tensor | None = None
        self.best_k_models: dict[str, Tensor] = {}
        self.kth_best_model_path = ""
        self.kth_value: Tensor = torch.tensor(torch.inf if mode == "min" else -torch.inf)
        self.best_model_score: Tensor | None = None
        self.best_model_path = ""
        self.last_model_path = ""
        self._last_checkpoint_saved = ""
        # paths this callback was asked to delete but must not (outside dirpath...): warned about once
        self._kept_paths: set[Any] = set()
        if dirpath and _is_local_path(dirpath):
            dirpath = os.path.realpath(os.path.expanduser(str(dirpath)))
        self.dirpath: str | None = str(dirpath) if dirpath else None
        self.filename = filename
        self._fs = get_filesystem(self.dirpath or "")
        if every_n_train_steps is None and every_n_epochs is None and train_time_interval is None:
            every_n_epochs, every_n_train_steps = 1, 0
        self._every_n_epochs: int = every_n_epochs or 0
        self._every_n_train_steps: int = every_n_train_steps or 0
        self._train_time_interval: timedelta | None = train_time_interval
        self._validate_configuration()

    def _validate_configuration(self) -> None:
        owner = "ModelCheckpoint"
        _arguments.check_str(owner, "monitor", self.monitor, allow_none=True)
        # types here; the ranges below keep Lightning's messages
        _arguments.check_int(owner, "save_top_k", self.save_top_k, minimum=None)
        _arguments.check_int(owner, "every_n_train_steps", self._every_n_train_steps, minimum=None)
        _arguments.check_int(owner, "every_n_epochs", self._every_n_epochs, minimum=None)
        _arguments.check_flag(owner, "save_weights_only", self.save_weights_only)
        _arguments.check_flag(owner, "async_save", self.async_save)
        if self._train_time_interval is not None and not isinstance(self._train_time_interval, timedelta):
            raise MisconfigurationException(
                f"`ModelCheckpoint(train_time_interval={self._train_time_interval!r})` is invalid: expected a"
                " `datetime.timedelta`, e.g. `timedelta(minutes=30)`."
            )
        self._validate_dirpath_and_filename()
        if self.save_top_k < -1:
            raise MisconfigurationException(f"Invalid value for save_top_k={self.save_top_k}. Must be >= -1")
        if self._every_n_train_steps < 0:
            raise MisconfigurationException(
                f"Invalid value for every_n_train_steps={self._every_n_train_steps}. Must be >= 0")
        if self._every_n_epochs < 0:
            raise MisconfigurationException(f"Invalid value for every_n_epochs={self._every_n_epochs}. Must be >= 0")
        triggers = (self._every_n_train_steps >= 1) + (self._every_n_epochs >= 1) + (
            self._train_time_interval is not None)
        if triggers > 1:
            raise MisconfigurationException(
                f"Combination of parameters every_n_train_steps={self._every_n_train_steps}, every_n_epochs="
                f"{self._every_n_epochs} and train_time_interval={self._train_time_interval} should be mutually"
                " exclusive."
            )
        if self.monitor is None and self.save_top_k not in (-1, 0, 1):
            raise MisconfigurationException(
                f"ModelCheckpoint(save_top_k={self.save_top_k}, monitor=None) is not a valid configuration. No"
                " quantity for top_k to track."
            )

    def _validate_dirpath_and_filename(self) -> None:
        if self.dirpath is not None and _is_local_path(self.dirpath) and os.path.isfile(self.dirpath):
            raise MisconfigurationException(
                f"`ModelCheckpoint(dirpath={self.dirpath!r})` is an existing file, not a directory. Pass a"
                " directory for the checkpoints (the file is left untouched)."
            )
        if self.filename is None:
            return
        if not isinstance(self.filename, str):
            raise MisconfigurationException(
                f"`ModelCheckpoint(filename={self.filename!r})` is invalid: expected a string template such as"
                " '{epoch}-{val_loss:.2f}'."
            )
        try:  # the template is formatted at every save: a bad one must fail now, not after an epoch
            self._format_checkpoint_name(self.filename, {}, auto_insert_metric_name=self.auto_insert_metric_name)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise MisconfigurationException(
                f"`ModelCheckpoint(filename={self.filename!r})` is not a valid template ({type(e).__name__}: {e})."
                " Use `{name}` or `{name:format_spec}` fields, e.g. '{epoch}-{val_loss:.2f}'."
            ) from None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            monitor=self.monitor, mode=self.mode, every_n_train_steps=self._every_n_train_steps,
            every_n_epochs=self._every_n_epochs, train_time_interval=self._train_time_interval,
        )

    @property
    def every_n_epochs(self) -> int:
        return self._every_n_epochs

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        dirpath = trainer.strategy.broadcast(self._resolve_dirpath(trainer))
        self.dirpath = dirpath
        self._fs = get_filesystem(dirpath)
        if self.save_last == "link" and not _is_local_path(dirpath):
            raise ValueError(
                f"`ModelCheckpoint(save_last='link')` is only supported for local file paths, got `dirpath={dirpath}`."
            )
        if self.async_save and not isinstance(trainer.strategy.checkpoint_io, AsyncCheckpointIO):
            trainer.strategy.checkpoint_io = AsyncCheckpointIO(trainer.strategy.checkpoint_io)
        if trainer.is_global_zero and stage == "fit":
            self._remove_stale_temp_files()
            if self.save_top_k != 0 and self._fs.isdir(dirpath) and self._fs.ls(dirpath):
                rank_zero_warn(f"Checkpoint directory {dirpath} exists and is not empty.")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._last_time_checked = time.monotonic()
        self._validated_this_fit = False

    def _idle_hooks(self) -> frozenset[str]:
        # the default: nothing saves at a batch's end (epoch ends and validation do), so a default Trainer
        # does not call the hook at all; decided from the configuration alone, alike on every rank. A
        # subclass's or a patched `on_train_batch_end` is always called.
        if (self._every_n_train_steps < 1 and self._train_time_interval is None
                and type(self).on_train_batch_end is _ON_TRAIN_BATCH_END and "on_train_batch_end" not in vars(self)):
            return frozenset({"on_train_batch_end"})
        return frozenset()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Save when ``every_n_train_steps`` or ``train_time_interval`` is due."""
        if self._every_n_train_steps < 1 and self._train_time_interval is None:
            # nothing saves at a batch's end (the Trainer skips this call then, see `_idle_hooks`); every rank
            # returns alike (the time-interval branch below broadcasts)
            return
        skip_state = self._should_skip_saving_checkpoint(trainer)
        skip_batch = self._every_n_train_steps < 1 or trainer.global_step % self._every_n_train_steps != 0
        skip_time = True
        now = time.monotonic()
        if self._train_time_interval is not None:
            previous = self._last_time_checked
            skip_time = previous is None or now - previous < self._train_time_interval.total_seconds()
            skip_time = trainer.strategy.broadcast(skip_time)  # ranks' clocks differ: rank 0 decides
        if skip_batch and skip_time:
            return
        if not skip_time:
            self._last_time_checked = now
        candidates = self._monitor_candidates(trainer)
        if self.monitor is not None and (self.monitor not in candidates or self._validation_follows(trainer)):
            # as in Lightning 2.6: scored with the value validation is about to produce, saved when it ends
            self._defer_save_until_validation = True
            return
        if skip_state:
            return
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)

    def _validation_follows(self, trainer: Trainer) -> bool:
        """Whether validation runs right after this batch (the epoch's last) and this callback saves after it."""
        if self._should_save_on_train_epoch_end(trainer) or not trainer.is_last_batch or not trainer.enable_validation:
            return False
        if not sum(trainer.num_val_batches):
            return False
        every = trainer.check_val_every_n_epoch
        return every is None or (trainer.current_epoch + 1) % every == 0

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer) and self._should_save_on_train_epoch_end(trainer):
            self._save_at_epoch_end(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._validated_this_fit = True
        if not self._should_skip_saving_checkpoint(trainer) and not self._should_save_on_train_epoch_end(trainer):
            if self._defer_save_until_validation:  # the save a batch deferred, now with fresh values
                self._defer_save_until_validation = False
                candidates = self._monitor_candidates(trainer)
                self._save_topk_checkpoint(trainer, candidates)
                self._save_last_checkpoint(trainer, candidates)
                return
            self._save_at_epoch_end(trainer)

    def _save_at_epoch_end(self, trainer: Trainer) -> None:
        candidates = self._monitor_candidates(trainer)
        if self._every_n_epochs >= 1 and (trainer.current_epoch + 1) % self._every_n_epochs == 0:
            self._save_topk_checkpoint(trainer, candidates)
        # as in Lightning 2.6: `last` follows a checkpoint written at this step (a link always follows the
        # newest one); when none was written all fit, `on_train_end` writes it once
        if self._last_global_step_saved == trainer.global_step or (
                self.save_last == "link" and self._last_checkpoint_saved):
            self._save_last_checkpoint(trainer, candidates)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write ``last`` when ``save_last`` is set and this fit wrote no checkpoint at all."""
        if self._defer_save_until_validation:
            # a save waited for a validation that never came: say so rather than end without a checkpoint
            self._defer_save_until_validation = False
            candidates = self._monitor_candidates(trainer)
            if self.monitor not in candidates:
                _warning_cache.warn(
                    f"`ModelCheckpoint(monitor={self.monitor!r})` could not find the monitored key in the returned"
                    f" metrics: {sorted(candidates)}, and no validation ran after the"
                    f" saves it was waiting for. HINT: Did you call `log({self.monitor!r}, value)` in the"
                    " `LightningModule`?"
                )
        if self.save_last and not self._last_checkpoint_saved and not trainer.fast_dev_run:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "best_model_score": self.best_model_score,
            "best_model_path": self.best_model_path,
            "current_score": self.current_score,
            "dirpath": self.dirpath,
            "best_k_models": dict(self.best_k_models),
            "kth_best_model_path": self.kth_best_model_path,
            "kth_value": self.kth_value,
            "last_model_path": self.last_model_path,
            # not in Lightning's state: what keeps a resumed run from saving the same step twice (the same
            # value in every file of a step, so `last` and the top-k file of that step hold equal states)
            "last_global_step_saved": self._last_global_step_saved,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        dirpath_from_ckpt = state_dict.get("dirpath", self.dirpath)
        if self.dirpath == dirpath_from_ckpt:
            self.best_model_score = state_dict["best_model_score"]
            self.kth_best_model_path = state_dict.get("kth_best_model_path", self.kth_best_model_path)
            self.kth_value = state_dict.get("kth_value", self.kth_value)
            self.best_k_models = dict(state_dict.get("best_k_models", self.best_k_models))
            self.last_model_path = state_dict.get("last_model_path", self.last_model_path)
            self.current_score = state_dict.get("current_score", self.current_score)
            self._last_global_step_saved = state_dict.get("last_global_step_saved", self._last_global_step_saved)
        else:
            rank_zero_warn(
                f"The dirpath has changed from {dirpath_from_ckpt!r} to {self.dirpath!r}, therefore"
                " `best_model_score`, `kth_best_model_path`, `kth_value`, `last_model_path` and `best_k_models`"
                " won't be reloaded. Only `best_model_path` will be reloaded."
            )
        self.best_model_path = state_dict["best_model_path"]
        self._keep_foreign_restored_paths()

    def _keep_foreign_restored_paths(self) -> None:
        """Warn once, right at the resume, about restored paths this callback will never delete.

        A checkpoint is data from outside: its ``best_model_path``, ``last_model_path`` and
        ``best_k_models`` stay available as information, but a file they name outside ``dirpath``
        (or on another filesystem) is never deleted when it rotates out.
        """
        if self.dirpath is None:  # loaded before setup: every deletion is checked anyway
            return
        restored = [self.best_model_path, self.last_model_path, self.kth_best_model_path, *self.best_k_models]
        refused: dict[Any, str] = {}
        for path in restored:
            if not path or path in refused or path in self._kept_paths:
                continue
            resolved, reason = resolve_owned_path(path, self.dirpath, self.FILE_EXTENSION)
            if resolved is None:
                refused[path] = reason
        if refused:
            self._kept_paths.update(refused)
            listing = "; ".join(f"{path!r} ({reason})" for path, reason in refused.items())
            rank_zero_warn(
                f"ModelCheckpoint will not delete {listing}: the checkpoint resumed from names these paths, but"
                f" this callback only deletes checkpoint files it wrote inside its `dirpath` {self.dirpath!r}."
                " They stay available as information; the files are left untouched."
            )

    # ------------------------------------------------------------------ when to save
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """With ``save_on_exception``: keep the state the run failed in (the exception still propagates)."""
        if not self._should_save_on_exception(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        filepath = self.format_checkpoint_name(candidates)
        self._save_checkpoint(trainer, filepath)
        self._save_last_checkpoint(trainer, candidates)
        rank_zero_info(f"{type(exception).__name__} raised ({exception}); saved a checkpoint to {filepath}")

    def _should_save_on_exception(self, trainer: Trainer) -> bool:
        return (
            self.save_on_exception
            and not trainer.fast_dev_run
            and not trainer.sanity_checking
            and self._last_global_step_saved != trainer.global_step
        )

    def _should_skip_saving_checkpoint(self, trainer: Trainer) -> bool:
        return (
            bool(trainer.fast_dev_run)
            or trainer.state.fn != TrainerFn.FITTING
            or trainer.sanity_checking
            or self._last_global_step_saved == trainer.global_step
        )

    def _should_save_on_train_epoch_end(self, trainer: Trainer) -> bool:
        if self._save_on_train_epoch_end is not None:
            return self._save_on_train_epoch_end
        # validation every few epochs: save after validation, when the monitored values exist
        if trainer.check_val_every_n_epoch != 1:
            return False
        if sum(trainer.num_val_batches) == 0:
            return True
        # several validations per epoch: save after each of them
        return trainer.val_check_interval == 1.0

    # ------------------------------------------------------------------ saving
    def _monitor_candidates(self, trainer: Trainer) -> dict[str, Tensor]:
        candidates = copy.deepcopy(trainer.callback_metrics)
        epoch = candidates.get("epoch")
        candidates["epoch"] = epoch.int() if isinstance(epoch, Tensor) else torch.tensor(trainer.current_epoch)
        step = candidates.get("step")
        candidates["step"] = step.int() if isinstance(step, Tensor) else torch.tensor(trainer.global_step)
        return candidates

    def _save_topk_checkpoint(self, trainer: Trainer, candidates: dict[str, Tensor]) -> None:
        if self.save_top_k == 0:
            return
        if self.monitor is None:
            self._save_none_monitor_checkpoint(trainer, candidates)
            return
        if self.monitor not in candidates:
            message = (
                f"`ModelCheckpoint(monitor={self.monitor!r})` could not find the monitored key in the returned"
                f" metrics: {sorted(candidates)}. HINT: Did you call `log({self.monitor!r}, value)` in the"
                " `LightningModule`?"
            )
            if self._validated_this_fit:
                raise MisconfigurationException(message)
            _warning_cache.warn(message)
        current = candidates.get(self.monitor)
        if self._check_monitor_top_k(trainer, current):
            assert current is not None
            self._update_best_and_save(current, trainer, candidates)
        elif self.verbose:
            rank_zero_info(f"Epoch {int(candidates['epoch']):d}, global step {int(candidates['step']):d}:"
                           f" {self.monitor!r} was not in top {self.save_top_k}")

    def check_monitor_top_k(self, trainer: Trainer, current: Tensor | None = None) -> bool:
        return self._check_monitor_top_k(trainer, current)

    def _check_monitor_top_k(self, trainer: Trainer, current: Tensor | None) -> bool:
        if current is None:
            return False
        if self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return True
        better = torch.lt if self.mode == "min" else torch.gt
        should_save = bool(better(current, self.best_k_models[self.kth_best_model_path]))
        return trainer.strategy.reduce_boolean_decision(should_save)

    def _save_none_monitor_checkpoint(self, trainer: Trainer, candidates: dict[str, Tensor]) -> None:
        filepath = self._versioned_filepath(candidates, trainer, self.best_model_path)
        previous = self.best_model_path
        with self._rollback_on_failure():
            self.best_model_path = filepath  # set first: it is part of the state being saved
            self._save_checkpoint(trainer, filepath)
        if self.save_top_k == 1 and previous:
            self._remove_rotated_out(trainer, previous, filepath)

    def _update_best_and_save(self, current: Tensor, trainer: Trainer, candidates: dict[str, Tensor]) -> None:
        k = len(self.best_k_models) + 1 if self.save_top_k == -1 else self.save_top_k
        with self._rollback_on_failure():
            del_filepath = None
            if len(self.best_k_models) == k and k > 0:
                del_filepath = self.kth_best_model_path
                self.best_k_models.pop(del_filepath)
            if torch.isnan(current):  # a NaN score ranks worst
                current = torch.tensor(float("inf" if self.mode == "min" else "-inf"), device=current.device)
            filepath = self._versioned_filepath(candidates, trainer, del_filepath)
            self.current_score = current
            self.best_k_models[filepath] = current
            if len(self.best_k_models) == k:
                worst = max if self.mode == "min" else min
                self.kth_best_model_path = worst(self.best_k_models, key=self.best_k_models.__getitem__)
                self.kth_value = self.best_k_models[self.kth_best_model_path]
            best = min if self.mode == "min" else max
            self.best_model_path = best(self.best_k_models, key=self.best_k_models.__getitem__)
            self.best_model_score = self.best_k_models[self.best_model_path]
            if self.verbose:
                rank_zero_info(
                    f"Epoch {int(candidates['epoch']):d}, global step {int(candidates['step']):d}: {self.monitor!r}"
                    f" reached {float(current):0.5f} (best {float(self.best_model_score):0.5f}), saving model to"
                    f" {filepath!r} as top {k}"
                )
            self._save_checkpoint(trainer, filepath)
        # the checkpoint that left the top k goes only once the new one is complete
        if del_filepath:
            self._remove_rotated_out(trainer, del_filepath, filepath)

    def _save_last_checkpoint(self, trainer: Trainer, candidates: dict[str, Tensor]) -> None:
        if not self.save_last:
            return
        filepath = self.format_checkpoint_name(candidates, self.CHECKPOINT_NAME_LAST)
        if self._enable_version_counter:
            version = self.STARTING_VERSION
            while self.file_exists(filepath, trainer) and filepath != self.last_model_path:
                filepath = self.format_checkpoint_name(candidates, self.CHECKPOINT_NAME_LAST, ver=version)
                version += 1
        previous = self.last_model_path
        with self._rollback_on_failure():
            self.last_model_path = filepath
            if self.save_last == "link" and self._last_checkpoint_saved and self.save_top_k != 0:
                self._link_checkpoint(trainer, self._last_checkpoint_saved, filepath)
            else:
                self._save_checkpoint(trainer, filepath)
        if previous:
            self._remove_rotated_out(trainer, previous, filepath)

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        # recorded before writing: the checkpoint holds this callback's state, and a resumed run must
        # know this step was already saved
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        trainer.save_checkpoint(filepath, self.save_weights_only)
        if trainer.is_global_zero:
            if any(_reads_checkpoint_files(logger, self) for logger in trainer.loggers):
                # such a logger uploads the files it is told about: they must be complete
                wait_for_checkpoint_writes(trainer.strategy.checkpoint_io)
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    @contextlib.contextmanager
    def _rollback_on_failure(self) -> Any:
        """Undo the bookkeeping of a save that raised (e.g. a full disk), so it matches the files."""
        saved = {key: copy.copy(getattr(self, key)) for key in (
            "best_k_models", "kth_best_model_path", "kth_value", "best_model_path", "best_model_score",
            "current_score", "last_model_path", "_last_global_step_saved", "_last_checkpoint_saved")}
        try:
            yield
        except BaseException:
            for key, value in saved.items():
                setattr(self, key, value)
            raise

    @staticmethod
    def _link_checkpoint(trainer: Trainer, filepath: str, linkpath: str) -> None:
        """Point ``linkpath`` at ``filepath`` with a relative symlink (rank 0), then wait for every rank.

        What was at ``linkpath`` is replaced: a file or a link in one rename; a directory only when it is
        empty or holds nothing but a sharded checkpoint's files (removed file by file), any other folder
        raises ``IsADirectoryError`` and is left untouched. Where symlinks cannot be made (e.g. Windows
        without the privilege), a checkpoint file is copied instead, atomically.
        """
        if trainer.is_global_zero:
            from torchbolt.strategies.fsdp import _check_sharded_dir

            _check_sharded_dir(linkpath)  # before anything is queued: a foreign folder fails the save now
            # behind a background write of `filepath`: a link never points to a file that is not complete
            _after_pending_writes(trainer.strategy.checkpoint_io, lambda: _link_or_copy(filepath, linkpath),
                                  linkpath)
        trainer.strategy.barrier()

    def _should_remove_checkpoint(self, trainer: Trainer, previous: str, current: str) -> bool:
        """Whether ``previous`` may be deleted (see :meth:`_deletable_path`)."""
        return self._deletable_path(trainer, previous, current, warn=False) is not None

    def _deletable_path(self, trainer: Trainer, previous: Any, current: str, warn: bool = True) -> str | None:
        """The spelling of ``previous`` to delete, or ``None`` when it must stay.

        It must stay when it is the new file or the file this fit resumed from, and whenever it is
        not a checkpoint file inside ``dirpath`` on the same filesystem (``..`` and symlinked folders
        resolved): such paths can only come from a restored (possibly crafted) checkpoint state, so
        they are kept as information and, with ``warn``, named in one warning.
        """
        if not previous or previous == current or previous in self._kept_paths:
            return None
        assert self.dirpath is not None
        resolved, reason = resolve_owned_path(previous, self.dirpath, self.FILE_EXTENSION)
        if resolved is None:
            if warn:
                self._keep(previous, reason)
            return None
        if resolved == resolve_owned_path(current, self.dirpath, self.FILE_EXTENSION)[0]:
            return None
        if trainer.ckpt_path is not None and resolved == resolve_owned_path(
                str(trainer.ckpt_path), self.dirpath, self.FILE_EXTENSION)[0]:
            return None
        return resolved

    def _keep(self, path: Any, reason: str) -> None:
        if path in self._kept_paths:
            return
        self._kept_paths.add(path)
        rank_zero_warn(
            f"ModelCheckpoint will not delete {path!r} ({reason}): this callback only deletes checkpoint files"
            f" it wrote inside its `dirpath` {self.dirpath!r}. It is left untouched."
        )

    def _remove_rotated_out(self, trainer: Trainer, previous: Any, current: str) -> None:
        """Delete ``previous``, which left the top ``k`` (or is the previous ``last``), if it is ours to delete."""
        target = self._deletable_path(trainer, previous, current)
        # a subclass may keep more files through `_should_remove_checkpoint`, never delete more
        if target is None or not self._should_remove_checkpoint(trainer, previous, current):
            return
        try:
            self._remove_checkpoint(trainer, target)
        except IsADirectoryError:  # a folder (that looks like a checkpoint): not a file this callback wrote
            self._keep(previous, "it is a directory, and directories are never deleted")

    def _remove_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        trainer.strategy.remove_checkpoint(filepath)

    def _remove_stale_temp_files(self) -> None:
        """Temporary files of writes interrupted by a crash; those of writers still alive are kept."""
        if self.dirpath is not None and _is_local_path(self.dirpath):
            remove_stale_temp_files(self.dirpath)

    # ------------------------------------------------------------------ names and paths
    def _format_checkpoint_name(self, filename: str | None, metrics: dict[str, Any], prefix: str = "",
                                auto_insert_metric_name: bool = True) -> str:
        if not filename:
            filename = "{epoch}" + self.CHECKPOINT_JOIN_CHAR + "{step}"
        # longest names first, so "epoch_test" is replaced before "epoch"
        groups = sorted(re.findall(r"(\{.*?)[:\}]", filename), key=len, reverse=True)
        metrics = dict(metrics)
        for group in groups:
            name = group[1:]
            if auto_insert_metric_name:
                filename = filename.replace(group, name + self.CHECKPOINT_EQUALS_CHAR + "{" + name)
            # index syntax so that names with dots ("val.loss") work in str.format
            filename = filename.replace(group, f"{{0[{name}]")
            if name not in metrics:
                metrics[name] = torch.tensor(0)
        filename = filename.format(metrics)
        return self.CHECKPOINT_JOIN_CHAR.join([prefix, filename]) if prefix else filename

    def format_checkpoint_name(self, metrics: dict[str, Any], filename: str | None = None,
                               ver: int | None = None, prefix: str | None = None) -> str:
        """The path a checkpoint with ``metrics`` gets (``prefix``: joined in front of the name with ``-``).

        Example::

            >>> ckpt = ModelCheckpoint(dirpath="/ckpts", filename="{epoch}-{val_loss:.2f}")
            >>> ckpt.format_checkpoint_name({"epoch": 2, "val_loss": 0.123456})
            '/ckpts/epoch=2-val_loss=0.12.ckpt'
        """
        name = self._format_checkpoint_name(filename or self.filename, metrics, prefix=prefix or "",
                                            auto_insert_metric_name=self.auto_insert_metric_name)
        if ver is not None:
            name = self.CHECKPOINT_JOIN_CHAR.join((name, f"v{ver}"))
        name = f"{name}{self.FILE_EXTENSION}"
        return os.path.join(self.dirpath, name) if self.dirpath else name

    def _versioned_filepath(self, candidates: dict[str, Tensor], trainer: Trainer, del_filepath: str | None) -> str:
        filepath = self.format_checkpoint_name(candidates)
        if self._enable_version_counter:
            version = self.STARTING_VERSION
            while self.file_exists(filepath, trainer) and filepath != del_filepath:
                filepath = self.format_checkpoint_name(candidates, ver=version)
                version += 1
        return filepath

    def file_exists(self, filepath: _PATH, trainer: Trainer) -> bool:
        """Whether ``filepath`` exists, as rank 0 sees it (so every rank decides the same).

        A file queued for a background write counts as existing, one queued for removal as gone.
        """
        exists = _pending_state(trainer.strategy.checkpoint_io, filepath)
        if exists is None:
            exists = self._fs.exists(str(filepath))
        return trainer.strategy.broadcast(exists)

    def _resolve_dirpath(self, trainer: Trainer) -> str:
        if self.dirpath is not None:
            return self.dirpath
        if trainer.loggers:
            logger = trainer.loggers[0]
            save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
            version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
            return os.path.join(str(save_dir), str(logger.name), version, "checkpoints")
        return os.path.join(str(trainer.default_root_dir), "checkpoints")

    def _find_last_checkpoints(self, trainer: Trainer) -> set[str]:
        """The ``last*.ckpt`` files in this callback's directory."""
        dirpath = self._resolve_dirpath(trainer)
        fs = get_filesystem(dirpath)
        pattern = re.compile(rf"^{re.escape(self.CHECKPOINT_NAME_LAST)}(-(\d+))?")
        if not fs.exists(dirpath):
            return set()
        found = set()
        for path in fs.ls(dirpath, detail=False):
            name = Path(str(path))
            if name.suffix == self.FILE_EXTENSION and pattern.match(name.stem):
                # the directory as the user spelled it (an fsspec URL keeps its protocol)
                found.add(os.path.normpath(str(path)) if _is_local_path(dirpath)
                          else f"{str(dirpath).rstrip('/')}/{name.name}")
        return found

    def _find_resumable_checkpoints(self, trainer: Trainer) -> set[str]:
        """Every complete checkpoint in this callback's directory (top-k and ``last`` alike) that can resume
        a fit: none when this callback saves weights only. Temporary files of interrupted writes are not
        listed (their names start with a dot and end in ``.tmp``)."""
        if self.save_weights_only:
            return set()
        dirpath = self._resolve_dirpath(trainer)
        fs = get_filesystem(dirpath)
        if not fs.exists(dirpath):
            return set()
        found = set()
        for path in fs.ls(dirpath, detail=False):
            name = Path(str(path))
            if name.suffix == self.FILE_EXTENSION and not name.name.startswith("."):
                found.add(os.path.normpath(str(path)) if _is_local_path(dirpath)
                          else f"{str(dirpath).rstrip('/')}/{name.name}")
        return found

    def to_yaml(self, filepath: _PATH | None = None) -> None:
        """Write ``best_k_models`` (path -> score) to ``filepath`` (default ``<dirpath>/best_k_models.yaml``)."""
        import yaml

        best_k = {path: float(score) for path, score in self.best_k_models.items()}
        if filepath is None:
            assert self.dirpath is not None, "`to_yaml()` needs a `filepath` before `dirpath` is set in setup"
            filepath = os.path.join(self.dirpath, "best_k_models.yaml")
        with get_filesystem(filepath).open(str(filepath), "w") as fp:
            yaml.safe_dump(best_k, fp)


# `from __future__ import annotations` leaves the annotations as strings; a parser that reads
# `inspect.signature(ModelCheckpoint).parameters["save_last"].annotation` directly (jsonargparse) needs the
# composed type itself to parse `--save_last link` / `true` / `false`
ModelCheckpoint.__init__.__annotations__["save_last"] = typing.get_type_hints(ModelCheckpoint.__init__)["save_last"]


#: `ModelCheckpoint.on_train_batch_end` as defined here (a patched class attribute is not this function)
_ON_TRAIN_BATCH_END = ModelCheckpoint.on_train_batch_end


def _reads_checkpoint_files(logger: Any, callback: ModelCheckpoint) -> bool:
    """Whether ``logger.after_save_checkpoint`` may read the checkpoint files now (to upload them)."""
    hook = getattr(type(logger), "after_save_checkpoint", None)
    if hook is None or hook is Logger.after_save_checkpoint:
        return False
    if type(logger).__module__.startswith("torchbolt.loggers.") and hasattr(logger, "_log_model"):
        # the bundled loggers upload at each save only in these modes (else when the fit ends)
        mode = logger._log_model
        return mode == "all" or (mode is True and callback.save_top_k == -1)
    return True


def _link_or_copy(filepath: str, linkpath: str) -> None:
    """``linkpath`` -> ``filepath`` as a symlink, or an atomic copy of the file where symlinks fail."""
    from torchbolt.strategies.fsdp import _remove_sharded_dir

    if os.path.isdir(linkpath) and not os.path.islink(linkpath):
        # a rename cannot replace a directory; `_remove_sharded_dir` refuses anything but a checkpoint's own files
        _remove_sharded_dir(linkpath)
    try:
        _atomic_symlink(filepath, linkpath)
    except OSError:
        if not os.path.isfile(filepath):
            raise
        with open(filepath, "rb") as source:
            _atomic_write(linkpath, lambda sink: shutil.copyfileobj(source, sink))  # type: ignore[arg-type]
