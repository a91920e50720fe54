"""The fit loop, top to bottom: sanity check -> epochs -> batches -> optimizer step -> validation -> stop.

It works on a :class:`~torchbolt.trainer.context.RunContext`: counters live in ``ctx.progress`` (one
owner) and advance through its methods; logged values go through ``ctx.metrics``. Per batch it does
no host synchronization: logged values stay on the device until a logger flush.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import partial
from itertools import chain, repeat
from typing import TYPE_CHECKING, Any

import torch

from torchbolt.profilers.profiler import profiled, profiled_iter
from torchbolt.trainer.data import DataSource
from torchbolt.trainer.dataloader_iter import (
    WithoutBatchIdx,
    run_training_steps,
    takes_dataloader_iter,
    warn_experimental,
)
from torchbolt.trainer.eval_loop import EvaluationLoop
from torchbolt.trainer.logging import ResultCollection
from torchbolt.trainer.optimization import AutomaticOptimization, ManualOptimization, update_lr_schedulers
from torchbolt.trainer.resume import (
    ResumePoint,
    accumulated_grads,
    capture_rng,
    epoch_iterator,
    generator_states,
    loader_states,
    metric_names,
    restore_grads,
    rng_to_checkpoint,
    set_rng,
)
from torchbolt.trainer.states import EpochPhase, RunningStage
from torchbolt.utilities.combined_loader import CombinedLoader
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import (
    PossibleUserWarning,
    WarningCache,
    rank_zero_debug,
    rank_zero_info,
    rank_zero_warn,
)
from torchbolt.utilities.seed import isolate_rng

if TYPE_CHECKING:
    from torchbolt.trainer.config import TrainerConfig
    from torchbolt.trainer.context import RunContext
    from torchbolt.trainer.states import Progress

_warning_cache = WarningCache()


def _set_sampler_epoch(loader: Any, epoch: int) -> None:
    """Call ``set_epoch`` on the samplers of ``loader`` (``DistributedSampler`` reshuffles with it), once on
    each: a loader's ``sampler`` is often also its ``batch_sampler.sampler``."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    candidates = (getattr(loader, "sampler", None), batch_sampler, getattr(batch_sampler, "sampler", None))
    seen: set[int] = set()
    for candidate in candidates:
        set_epoch = getattr(candidate, "set_epoch", None)
        if callable(set_epoch) and id(candidate) not in seen:
            seen.add(id(candidate))
            set_epoch(epoch)
    for child in getattr(loader, "flattened", []):
        _set_sampler_epoch(child, epoch)


def can_stop_early(config: TrainerConfig, p: Progress) -> bool:
    """Whether a stop request may end the fit now: ``min_epochs`` and ``min_steps`` are met."""
    met_epochs = p.current_epoch >= config.min_epochs if config.min_epochs else True
    met_steps = p.global_step >= config.min_steps if config.min_steps else True
    return met_epochs and met_steps


def fit_done(config: TrainerConfig, p: Progress, num_training_batches: int | float) -> bool:
    """Whether the fit is over: no training batches, ``max_steps`` or ``max_epochs`` reached, or a stop request
    that ``min_epochs``/``min_steps`` allow. Checked between epochs by the loop, and by ``trainer.fit_loop.done``.

    An unset ``max_epochs`` (``None``, before the first fit gives it its value) is no epoch limit yet.
    """
    if num_training_batches == 0:
        rank_zero_info("`Trainer.fit` stopped: No training batches.")
        return True
    if config.max_steps != -1 and p.global_step >= config.max_steps:
        rank_zero_info(f"`Trainer.fit` stopped: `max_steps={config.max_steps}` reached.")
        return True
    max_epochs = config.max_epochs
    if max_epochs is not None and max_epochs != -1 and p.current_epoch >= max_epochs:
        rank_zero_info(f"`Trainer.fit` stopped: `max_epochs={max_epochs}` reached.")
        return True
    if p.should_stop and can_stop_early(config, p):
        rank_zero_debug("`Trainer.fit` stopped: `trainer.should_stop` was set.")
        return True
    return False


def _with_lookahead(iterator: Iterator[Any], batch_idx: int) -> Iterator[tuple[int, Any, bool]]:
    """``(batch_idx, batch, is_last)`` from an iterator of unknown length: one batch fetched ahead."""
    sentinel = object()
    current = next(iterator, sentinel)
    while current is not sentinel:
        following = next(iterator, sentinel)
        yield batch_idx, current, following is sentinel
        batch_idx += 1
        current = following


class FitLoop:
    """Runs ``trainer.fit``'s training and in-training validation."""

    def __init__(self, ctx: RunContext, source: DataSource) -> None:
        self.ctx = ctx
        self.source = source
        self.progress = ctx.progress
        self.results = ResultCollection(training=True, reduce_fn=ctx.strategy.reduce_fn,
                                        device=ctx.strategy.root_device)
        automatic = ctx.module.automatic_optimization
        self.optimization: AutomaticOptimization | ManualOptimization = (
            AutomaticOptimization(ctx) if automatic else ManualOptimization(ctx)
        )
        # `training_step(self, dataloader_iter)`: the step fetches its own batches (decided once per run)
        self._iter_mode = takes_dataloader_iter(ctx.module.training_step)
        if self._iter_mode:
            warn_experimental("training_step")
            step = self.optimization.training_step or ctx.strategy.training_step
            self.optimization.training_step = WithoutBatchIdx(step)
        self.val_loop = EvaluationLoop(ctx, RunningStage.VALIDATING, inference_mode=False)
        self.train_loader: Any = None
        self._train_loaded_epoch = -1
        self.val_loaders: list[Any] | None = None
        self.val_limits: list[int | float] = []
        # the epoch the validation loaders were last loaded for (-inf: not yet, or only for a sanity check
        # outside a validation epoch), which `reload_dataloaders_every_n_epochs` counts from
        self._val_loaded_epoch: float = -math.inf
        self.val_check_batch: int | float = math.inf
        # time-based `val_check_interval`: seconds between validations (None: batch-based, decided at
        # construction so the per-batch check reads no clock otherwise) and the clock of the last validation
        interval = ctx.config.val_check_interval
        self._val_check_seconds: float | None = (
            interval.total_seconds() if isinstance(interval, timedelta) else None)
        self._last_val_time = 0.0
        self._profiler = ctx.profiler
        if self._profiler is not None:
            # decided once: an unprofiled loop runs the plain methods, with no per-batch check
            self._run_epoch = profiled(self._run_epoch, "run_training_epoch", self._profiler)  # type: ignore[method-assign]
            self.optimization.run = profiled(  # type: ignore[method-assign]
                self.optimization.run, "run_training_batch", self._profiler)
        # exact resume: the random state this epoch's training iterator was created from, and the
        # checkpoint this fit resumes from (consumed as the run reaches the checkpointed point)
        self._epoch_rng: dict[str, Any] | None = None
        self._epoch_generators: list[torch.Tensor] = []
        self._resume: ResumePoint | None = None
        self._val_enabled = False
        self._val_mid_epoch = False
        #: whether every rank agreed that a signal arrived (the run's strategy object is fixed: bound once)
        self._poll_signals: Callable[[], bool] = ctx.signals.poller(ctx.strategy)
        #: moves a training batch to the device (resolved when an epoch's batches start)
        self._transfer: Callable[[Any], Any] = partial(ctx.hooks.transfer_batch, dataloader_idx=0)

    @property
    def validates_on_time(self) -> bool:
        """Whether validation falls due on a time interval (``val_check_interval`` given as a duration)."""
        return self._val_check_seconds is not None

    # ------------------------------------------------------------------ entry point
    def run(self) -> None:
        ctx = self.ctx
        hooks = ctx.hooks
        if self._resume is None:  # a resumed run does not sanity-check (Lightning's behaviour)
            self._run_sanity_check()
        if self.train_loader is None:
            self.setup_train_data()
        if self._skip():
            self._resume = None
            return
        if self.validation_enabled() and self.val_loaders is None and self._is_val_epoch():
            self._setup_val_data()
        self._warn_eval_mode_modules()
        ctx.state.stage = RunningStage.TRAINING
        ctx.metrics.collect_into(self.results)
        hooks.both("on_train_start")
        ctx.strategy.on_train_start()
        if self._resume is not None:
            self._resume_at_train_start(self._resume)
        try:
            if self._epoch_in_flight():
                self._run_epoch()  # the checkpoint was written inside an epoch: finish it as the original run would
            while not self._done():
                self._run_epoch()
        finally:
            if isinstance(self.optimization, AutomaticOptimization):
                self.optimization.release()  # the last batch's graph does not outlive the fit, failed or not
        self._resume = None
        hooks.both("on_train_end")
        ctx.strategy.on_train_end()

    # ------------------------------------------------------------------ exact resume
    def resume_from(self, point: ResumePoint) -> None:
        """Continue from a checkpoint's resume state when the run starts (``Progress`` is already restored)."""
        self._resume = point

    def resume_pending(self, in_epoch: bool = False) -> bool:
        """Whether this fit resumes from a checkpoint and has not yet reached the point it was written at
        (``in_epoch``: a point inside an epoch): Lightning's ``restarting``."""
        return self._resume is not None and (not in_epoch or self._epoch_in_flight())

    def _epoch_in_flight(self) -> bool:
        return self.progress.cursor()[0] is not EpochPhase.START

    def _resume_at_train_start(self, point: ResumePoint) -> None:
        if point.train_loaded_epoch is not None:
            self._train_loaded_epoch = point.train_loaded_epoch
        if point.results is not None and self._epoch_in_flight():
            # (between epochs the aggregates are empty; what `on_train_start` just logged is kept)
            self.results.load_state_dict(point.results, point.restore_metrics(self.ctx.module))
        self.ctx.metrics.epoch_log = dict(point.epoch_log)
        restore_grads(self.ctx.module, point.grads)
        # when batches of the epoch are to be replayed, the checkpoint-moment random state is put back
        # after the replay (in _epoch_iterator); otherwise now
        p = self.progress
        replay = p.epoch_batches_done > 0 and not p.epoch_ending
        if point.rng is not None and not replay:
            set_rng(point.rng)

    def checkpoint_state(self, include_grads: bool) -> dict[str, Any]:
        """This loop's part of a checkpoint's resume state (see ``trainer/resume.py``)."""
        loader = self.train_loader
        return {
            "epoch_rng": rng_to_checkpoint(self._epoch_rng) if self._epoch_rng is not None else None,
            "epoch_generators": list(self._epoch_generators),
            "generators": generator_states(loader),
            "loader_states": loader_states(loader, self.progress.epoch_batches_done),
            "train_loaded_epoch": self._train_loaded_epoch,
            "grads": accumulated_grads(self.ctx.module) if include_grads else {},
            "results": self.results.state_dict(metric_names(self.ctx.module)),
            "epoch_log": {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v
                          for k, v in self.ctx.metrics.epoch_log.items()},
        }

    # ------------------------------------------------------------------ data
    def setup_train_data(self) -> None:
        """Load the training loader (and with it ``trainer.num_training_batches``)."""
        ctx = self.ctx
        config = ctx.config
        self.train_loader, ctx.sizes.train = ctx.data.train_loader(self.source)
        self._train_loaded_epoch = self.progress.current_epoch
        n = ctx.sizes.train
        if isinstance(self.train_loader, CombinedLoader) and self.train_loader.mode == "sequential":
            raise ValueError(
                f'`{type(self).__name__}` does not support the `CombinedLoader(mode="sequential")` mode: training'
                " takes one batch of every loader per step. Use mode 'max_size_cycle', 'min_size' or 'max_size'."
            )
        interval = config.val_check_interval
        if self._val_check_seconds is not None:
            # time-based: the clock starts with the (re)loaded training data; no batch count applies
            self.val_check_batch = math.inf
            self._last_val_time = time.monotonic()
        elif isinstance(interval, int):
            # with validation off (`limit_val_batches=0`) the interval never applies, so it is not checked
            if interval > n and config.check_val_every_n_epoch is not None and config.limit_val_batches > 0:
                raise ValueError(
                    f"`val_check_interval` ({interval}) must be less than or equal to the number of the training"
                    f" batches ({n}). If you want to disable validation set `limit_val_batches` to 0.0 instead."
                    " If you want to validate based on the total training batches, set"
                    " `check_val_every_n_epoch=None`."
                )
            self.val_check_batch = interval
        elif n == math.inf:
            if interval != 1.0:
                raise MisconfigurationException(
                    "When using an iterable without `__len__` for `train_dataloader`, `Trainer(val_check_interval)`"
                    " must be `1.0`, an int or a time interval. An int k specifies checking validation every k"
                    " training batches."
                )
            self.val_check_batch = math.inf
        else:
            assert isinstance(interval, float)
            self.val_check_batch = max(1, int(n * interval))
        if ctx.loggers and n < config.log_every_n_steps and not config.fast_dev_run:
            rank_zero_warn(
                f"The number of training batches ({n}) is smaller than the logging interval"
                f" Trainer(log_every_n_steps={config.log_every_n_steps}). Set a lower value for"
                " log_every_n_steps if you want to see logs for the training epoch.",
                category=PossibleUserWarning,
            )

    def _setup_val_data(self, count_as_load: bool = True) -> None:
        """Load the validation loaders. ``count_as_load=False`` (a sanity check outside a validation epoch):
        ``reload_dataloaders_every_n_epochs`` does not count from this load, so the first validation epoch
        loads them again, as in Lightning."""
        ctx = self.ctx
        self.val_loaders, self.val_limits = ctx.data.eval_loaders(self.source, "val", fitting=True)
        ctx.sizes.val = list(self.val_limits)
        if count_as_load:
            self._val_loaded_epoch = self.progress.current_epoch

    def _is_val_epoch(self) -> bool:
        """Whether ``check_val_every_n_epoch`` lets the current epoch validate."""
        every_n_epochs = self.ctx.config.check_val_every_n_epoch
        return every_n_epochs is None or (self.progress.current_epoch + 1) % every_n_epochs == 0

    def _reload_due(self, loaded_epoch: float) -> bool:
        n = self.ctx.config.reload_dataloaders_every_n_epochs
        return n > 0 and self.progress.current_epoch - loaded_epoch >= n

    def validation_enabled(self) -> bool:
        """Whether this fit validates (a val loader, a ``validation_step`` and ``limit_val_batches != 0``)."""
        ctx = self.ctx
        return (
            ctx.config.limit_val_batches != 0
            and self.source.is_defined("val")
            and ctx.hooks.module_overrides("validation_step")
        )

    def _skip(self) -> bool:
        done = self._done() and not (self._resume is not None and self._epoch_in_flight())
        return done or self.ctx.config.limit_train_batches == 0

    # ------------------------------------------------------------------ sanity check
    def _run_sanity_check(self) -> None:
        ctx = self.ctx
        num_steps = ctx.config.num_sanity_val_steps
        if not self.validation_enabled() or num_steps == 0:
            return
        ctx.state.stage = RunningStage.SANITY_CHECKING
        # evaluation must not change the random stream training draws from (shuffling, dropout)
        with isolate_rng():
            ctx.hooks.callbacks("on_sanity_check_start")
            self._setup_val_data(count_as_load=self._is_val_epoch())
            assert self.val_loaders is not None
            limits = [min(num_steps, limit) for limit in self.val_limits]
            ctx.sizes.sanity_val = limits
            if any(limits):
                _set_sampler_epoch_all(self.val_loaders, self.progress.current_epoch)
                EvaluationLoop(ctx, RunningStage.SANITY_CHECKING, inference_mode=False).run(
                    self.val_loaders, limits)
                if self._val_check_seconds is not None:
                    self._last_val_time = time.monotonic()
            ctx.hooks.callbacks("on_sanity_check_end")
        ctx.metrics.store.reset()
        ctx.state.stage = RunningStage.TRAINING

    # ------------------------------------------------------------------ stopping
    def _can_stop_early(self) -> bool:
        return can_stop_early(self.ctx.config, self.progress)

    def _done(self) -> bool:
        return fit_done(self.ctx.config, self.progress, self.ctx.sizes.train)

    def _epoch_done(self, batch_idx: int) -> bool:
        p, config = self.progress, self.ctx.config
        if config.max_steps != -1 and p.global_step >= config.max_steps:
            return True
        if p.should_stop:
            if self._can_stop_early():
                return True
            _warning_cache.info(
                f"Trainer was signaled to stop but the required `min_epochs={config.min_epochs!r}` or"
                f" `min_steps={config.min_steps!r}` has not been met. Training will continue..."
            )
        return False

    # ------------------------------------------------------------------ one epoch
    def _run_epoch(self) -> None:
        """One training epoch, from wherever its cursor stands: a fresh epoch runs every phase; one resumed
        from a checkpoint starts at the phase the checkpoint was written in."""
        ctx, p = self.ctx, self.progress
        reloaded = self._reload_due(self._train_loaded_epoch)
        if reloaded:
            self.setup_train_data()
        _set_sampler_epoch(self.train_loader, p.current_epoch)
        phase, done = p.cursor()
        # fixed for the epoch: checked once here instead of for every batch
        self._val_enabled = self.validation_enabled()
        # validation can fall due before the epoch's last batch only with a batch or time interval (or a stop
        # request); otherwise `_should_validate` is asked at the last batch alone
        self._val_mid_epoch = self._val_enabled and (
            self.val_check_batch != math.inf or self._val_check_seconds is not None)
        if phase is EpochPhase.START:
            self._open_epoch()
        ctx.metrics.collect_into(self.results)
        if phase is not EpochPhase.END:
            iterator = self._epoch_iterator(fresh_loader=reloaded)
            more = phase is not EpochPhase.BATCHES_DONE
            if phase is EpochPhase.BATCH_TAIL:
                more = self._finish_resumed_tail(done - 1)
            if more and self._iter_mode:
                run_training_steps(self, iterator)
            elif more:
                limited = ctx.config.max_steps != -1
                self._transfer = ctx.hooks.batch_transfer(0)
                for batch_idx, batch, is_last in self._batches(iterator):
                    if self._run_batch(batch, batch_idx, is_last):
                        break  # on_train_batch_start returned -1
                    # `_epoch_done` only when a step limit or a stop request could end the epoch early
                    if is_last or ((limited or p.should_stop) and self._epoch_done(batch_idx)):
                        break
        self._end_epoch()

    def _open_epoch(self) -> None:
        """A new epoch: ``on_train_epoch_start`` (the epoch aggregates were cleared when the last epoch closed,
        so values logged in ``on_train_start`` count towards the first epoch)."""
        self.progress.open_epoch()
        self.val_loop.batch_counter.clear()
        self.ctx.metrics.collect_into(self.results)
        self.ctx.hooks.both("on_train_epoch_start")
        # after the hooks: a checkpoint written in them resumes before them, so that callbacks that
        # prepare the epoch there (weight averaging, finetuning) do so again, as in Lightning
        self.progress.epoch_opened()

    def _finish_resumed_tail(self, batch_idx: int) -> bool:
        """Resumed between batch ``batch_idx``'s optimizer step and the end of its post-step work: finish
        that work; returns whether the epoch has batches left to train."""
        last = self.progress.last_batch_seen
        self._finish_batch(batch_idx, self._is_step(batch_idx, last), last)
        return not (last or self._epoch_done(batch_idx))

    def _epoch_iterator(self, fresh_loader: bool) -> Iterator[Any]:
        """A fresh iterator over the training loader, past the batches already done this epoch.

        It first records the random state the iterator is created from (the shuffled order and the
        workers' seeds derive from it), so that a checkpoint written later in the epoch can rebuild it.
        """
        point, self._resume = self._resume, None
        loader = self.train_loader
        done = self.progress.epoch_batches_done
        if point is not None and done > 0:
            self._epoch_rng, self._epoch_generators = point.epoch_rng, list(point.epoch_generators)
            return profiled_iter(point.replay_epoch(loader, done), self._profiler,
                                 "[_TrainingEpochLoop].train_dataloader_next")
        if point is not None and not fresh_loader:
            point.restore_loader(loader)  # rebuilt for this fit: put it where the original loader was
        self._epoch_rng = capture_rng()
        self._epoch_generators = generator_states(loader)
        return profiled_iter(epoch_iterator(loader), self._profiler, "[_TrainingEpochLoop].train_dataloader_next")

    def _is_step(self, batch_idx: int, is_last: bool) -> bool:
        return is_last or (batch_idx + 1) % self.ctx.config.accumulate_grad_batches == 0

    def _batches(self, iterator: Iterator[Any]) -> Iterator[tuple[int, Any, bool]]:
        """``(batch_idx, batch, is_last)`` for the rest of the epoch.

        With a known length, ``is_last`` comes from the count, so batches are fetched exactly when a
        hand-written loop would fetch them (random state in ``__getitem__`` is consumed in the same
        order); the tuples come from a ``zip`` (no Python frame per batch), which asks the index range
        first and so stops without fetching a batch past the count. Without a length, one batch is
        fetched ahead to know which is the last.
        """
        total = self.ctx.sizes.train
        start = self.progress.epoch_batches_done
        if start >= total:
            return iter(())
        if total != math.inf:
            left = int(total) - start
            return zip(range(start, start + left), iterator, chain(repeat(False, left - 1), (True,)))
        return _with_lookahead(iterator, start)

    def _run_batch(self, batch: Any, batch_idx: int, is_last: bool) -> bool:
        """Train on one batch; returns ``True`` when ``on_train_batch_start`` asked to end the epoch.

        This is the per-step hot path: hooks nobody overrides are skipped with a set lookup
        (``hooks.active``), and nothing here synchronizes with the device.
        """
        ctx, p = self.ctx, self.progress
        hooks = ctx.hooks
        p.begin_batch(batch_idx, is_last)
        batch = self._transfer(batch)
        self.results.batch_start(batch)
        if "on_train_batch_start" in hooks.active:
            hooks.callbacks("on_train_batch_start", batch, batch_idx)
            if hooks.module("on_train_batch_start", batch, batch_idx) == -1:
                # as in Lightning, the rest of the epoch is skipped: this is its last batch
                # (`trainer.is_last_batch`), so the schedulers stepped at an epoch's end are stepped now
                p.last_batch_seen = p.batch_is_last = True
                if ctx.strategy.lr_scheduler_configs:
                    update_lr_schedulers(ctx, "epoch", False, batch_idx)
                return True
        accumulate = ctx.config.accumulate_grad_batches
        single = accumulate == 1  # every batch steps and starts a window (the modulos are skipped)
        is_step = single or is_last or (batch_idx + 1) % accumulate == 0
        optimization = self.optimization
        if isinstance(optimization, AutomaticOptimization):
            outputs = optimization.run(batch, batch_idx, is_step, single or batch_idx % accumulate == 0)
        else:
            outputs = optimization.run(batch, batch_idx)
        self._complete_batch(outputs, batch, batch_idx, is_step, is_last)
        return False

    def _complete_batch(self, outputs: Any, batch: Any, batch_idx: int, is_step: bool, is_last: bool,
                        hook_batch_idx: int | None = None) -> None:
        """Everything after step ``batch_idx``'s optimization: the schedulers due, ``on_train_batch_end`` (with
        ``batch`` and ``hook_batch_idx``, default ``batch_idx``: a ``dataloader_iter`` step passes the index of
        the batch it fetched last), the post-step work and the signal check."""
        ctx = self.ctx
        if ctx.strategy.lr_scheduler_configs:
            if is_step:
                update_lr_schedulers(ctx, "step", False, batch_idx)
            if is_last:
                update_lr_schedulers(ctx, "epoch", False, batch_idx)
        # the batch counts as done from here: a checkpoint written in on_train_batch_end resumes after it
        self.progress.batch_trained(batch_idx, is_last)
        ctx.metrics.stage_train_step(self.results)  # on_train_batch_end sees this batch's values
        if "on_train_batch_end" in ctx.hooks.active:
            ctx.hooks.both("on_train_batch_end", outputs, batch,
                           batch_idx if hook_batch_idx is None else hook_batch_idx)
        self._finish_batch(batch_idx, is_step, is_last)
        # every rank sees a signal at the same batch; at an epoch's end `_end_epoch` acts on it
        if self._poll_signals() and not (is_last or self._epoch_done(batch_idx)):
            ctx.signals.stop(ctx.trainer)  # checkpoint if the signal asks for it; raises

    def _finish_batch(self, batch_idx: int, is_step: bool, is_last: bool) -> None:
        """The work after ``on_train_batch_end``: step logging, validation when due, plateau schedulers."""
        ctx, p = self.ctx, self.progress
        if is_step or not isinstance(self.optimization, AutomaticOptimization):
            ctx.metrics.publish_train_step(self.results, ctx.config.log_every_n_steps)
        if (self._val_enabled and not p.tail_validated and (is_last or self._val_mid_epoch or p.should_stop)
                and self._should_validate(batch_idx, is_last)):
            self._run_validation(is_step)
            p.tail_validation_done()
        if is_step and ctx.strategy.lr_scheduler_configs:
            update_lr_schedulers(ctx, "step", True, batch_idx)
        p.finish_batch(stepped=is_step)
        if p.should_stop:
            ctx.metrics.save_loggers()

    def _end_epoch(self) -> None:
        ctx, p = self.ctx, self.progress
        hooks = ctx.hooks
        metrics = ctx.metrics
        if not p.epoch_ending:  # on a resume from a checkpoint written in these hooks, they already ran
            metrics.publish_train_epoch(self.results)
            p.begin_epoch_end()
            hooks.callbacks("on_train_epoch_end", monitoring=False)
            hooks.module("on_train_epoch_end")
            metrics.publish_train_epoch(self.results)
            hooks.callbacks("on_train_epoch_end", monitoring=True)
        if p.last_batch_seen:
            update_lr_schedulers(ctx, "epoch", True, p.batch_idx)
        metrics.flush_train_epoch()
        self.results.reset()  # the epoch's values are out: the next epoch aggregates afresh
        p.advance_epoch()
        metrics.collect_into(None)
        if ctx.signals.agreed:
            ctx.signals.stop(ctx.trainer)

    # ------------------------------------------------------------------ validation
    def _should_validate(self, batch_idx: int, is_last: bool) -> bool:
        p = self.progress
        every_n_epochs = self.ctx.config.check_val_every_n_epoch
        if not self._val_enabled:
            return False
        if every_n_epochs is not None and (p.current_epoch + 1) % every_n_epochs != 0:
            return False
        if is_last and ((self.val_check_batch == math.inf and self._val_check_seconds is None) or self._iter_mode):
            return True  # a `dataloader_iter` step fetches an unknown number of batches: validate at the epoch's end
        if p.should_stop and self._can_stop_early():
            return True
        if self._val_check_seconds is not None:
            # one clock read per batch, only when time-based validation was asked for
            return time.monotonic() - self._last_val_time >= self._val_check_seconds
        if self.val_check_batch == math.inf:
            return is_last
        index = p.total_batch_idx if every_n_epochs is None else batch_idx
        return (index + 1) % self.val_check_batch == 0

    def _run_validation(self, at_step_boundary: bool) -> None:
        ctx = self.ctx
        if self.val_loaders is None or self._reload_due(self._val_loaded_epoch):
            self._setup_val_data()
        assert self.val_loaders is not None
        if not self.val_loaders or not any(self.val_limits):
            return
        if at_step_boundary:
            ctx.hooks.module("on_validation_model_zero_grad")
        _set_sampler_epoch_all(self.val_loaders, self.progress.current_epoch)
        ctx.state.stage = RunningStage.VALIDATING
        self.val_loop.run(self.val_loaders, self.val_limits)
        if self._val_check_seconds is not None:
            self._last_val_time = time.monotonic()  # the next interval starts when this validation ends
        ctx.state.stage = RunningStage.TRAINING
        ctx.metrics.collect_into(self.results)
        torch.set_grad_enabled(True)

    def _warn_eval_mode_modules(self) -> None:
        module = self.ctx.module
        in_eval = [name for name, m in module.named_modules() if not m.training]
        if in_eval:
            rank_zero_warn(
                f"Found {len(in_eval)} module(s) in eval mode at the start of training: {in_eval[:5]}."
                " This may lead to unexpected behavior during training. If this is intentional,"
                " you can ignore this warning.",
                category=PossibleUserWarning,
            )


def _set_sampler_epoch_all(loaders: list[Any], epoch: int) -> None:
    for loader in loaders:
        _set_sampler_epoch(loader, epoch)
