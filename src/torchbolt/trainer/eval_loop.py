"""Validation, test, sanity-check and predict loops over one or several dataloaders.

One evaluation run::

    capture every submodule's train/eval mode; on_<stage>_model_eval()
    on_<stage>_start(); on_<stage>_epoch_start()
    for each dataloader, for each batch up to its limit:
        transfer hooks; on_<stage>_batch_start(); <stage>_step(); on_<stage>_batch_end()
    on_<stage>_epoch_end(); epoch metrics computed (callbacks and loggers see them)
    on_<stage>_end(); submodule modes restored; on_<stage>_model_train()
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from torchbolt.loops.progress import BatchCounter
from torchbolt.profilers.profiler import Profiler, profiled_iter
from torchbolt.trainer.dataloader_iter import (
    run_eval_steps,
    run_predict_steps,
    takes_dataloader_iter,
    warn_experimental,
)
from torchbolt.trainer.logging import ResultCollection
from torchbolt.trainer.states import RunningStage, TrainerFn
from torchbolt.utilities.combined_loader import CombinedLoader
from torchbolt.utilities.data import sized_len
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import WarningCache, rank_zero_warn
from torchbolt.utilities.signature_utils import is_param_in_hook_signature

if TYPE_CHECKING:
    from torchbolt.trainer.context import RunContext

_warning_cache = WarningCache()
_HOOK_PREFIX = {RunningStage.VALIDATING: "validation", RunningStage.SANITY_CHECKING: "validation",
                RunningStage.TESTING: "test", RunningStage.PREDICTING: "predict"}


def _capture_modes(module: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in module.named_modules()}


def _restore_modes(module: nn.Module, modes: dict[str, bool]) -> None:
    for name, m in module.named_modules():
        if name in modes:
            m.training = modes[name]


def _check_dataloader_idx_signature(module: Any, prefix: str, loader_name: str, multiple: bool,
                                    check_step: bool = True) -> None:
    """Raise when the module's ``<prefix>_step`` or ``on_<prefix>_batch_start/end`` cannot take the
    ``dataloader_idx`` the loop will (or will not) pass.

    With several loaders run one after the other, each needs a parameter named ``dataloader_idx`` (or
    ``*args``; ``**kwargs`` does not count: the index is passed positionally). With one loader, a
    ``dataloader_idx`` parameter needs a default value. ``check_step=False``: the step takes
    ``dataloader_iter`` (it gets the index from the iterator), only the hooks are checked.

    Raises:
        RuntimeError: naming the method and the fix (Lightning raises the same type).
    """
    names = (f"{prefix}_step",) if check_step else ()
    for name in (*names, f"on_{prefix}_batch_start", f"on_{prefix}_batch_end"):
        fn = getattr(module, name, None)
        if fn is None:
            continue
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            continue
        where = f"`{type(module).__name__}.{name}()`"
        if multiple and not is_param_in_hook_signature(fn, "dataloader_idx"):
            raise RuntimeError(
                f"You provided multiple `{loader_name}`, but no `dataloader_idx` argument in {where}. The loop"
                " passes each batch's loader index as the last positional argument: try adding `dataloader_idx=0`"
                " to its signature."
            )
        idx = params.get("dataloader_idx")
        if not multiple and idx is not None and idx.default is inspect.Parameter.empty:
            raise RuntimeError(
                f"You provided only a single `{loader_name}`, but have included `dataloader_idx` in {where}, which"
                " the loop does not pass then. Either remove the argument or give it a default value i.e."
                " `dataloader_idx=0`."
            )


def _takes_batch_idx(step: Any) -> bool:
    """Whether ``step`` takes a ``batch_idx`` (by name, ``*args``, or a second positional parameter)."""
    try:
        return is_param_in_hook_signature(step, "batch_idx", min_args=2)
    except TypeError:  # no inspectable signature: pass it, as always
        return True


def _combined_in_parallel(loaders: list[Any]) -> CombinedLoader | None:
    """The loader when the stage's loaders are one ``CombinedLoader`` iterated in parallel (a mode other than
    ``"sequential"``): each batch then holds one batch of every loader, and no ``dataloader_idx`` is passed."""
    if len(loaders) == 1 and isinstance(loaders[0], CombinedLoader) and loaders[0].mode != "sequential":
        return loaders[0]
    return None


def _batches(loader: Any, limit: int | float, profiler: Profiler | None = None,
             action: str = "") -> Iterator[tuple[int, Any]]:
    if limit == 0:
        return
    for batch_idx, batch in enumerate(profiled_iter(loader, profiler, action)):
        yield batch_idx, batch
        if batch_idx + 1 >= limit:
            return


def _replace_loaders(loop: Any, loaders: list[Any], limits: list[int | float]) -> None:
    """Swap a running loop's loaders before its batches start (from an ``on_<stage>_start`` hook).

    In place: the lists are the ones the Trainer shows (``trainer.val_dataloaders``,
    ``trainer.num_val_batches``...), which then show the new loaders too.

    Raises:
        ValueError: when the number of loaders changes (the loop's per-loader state is sized already).
    """
    if len(loaders) != len(loop.loaders) or len(limits) != len(loaders):
        raise ValueError(f"Expected {len(loop.loaders)} loaders (and as many limits), got {len(loaders)}.")
    loop.loaders[:] = loaders
    loop.limits[:] = limits


class EvaluationLoop:
    """Runs ``validation_step`` or ``test_step`` over loaders and reduces the logged metrics."""

    def __init__(self, ctx: RunContext, stage: RunningStage, inference_mode: bool) -> None:
        self.ctx = ctx
        self.stage = stage
        self._inference_mode = inference_mode
        self._prefix = _HOOK_PREFIX[stage]
        self.results = ResultCollection(training=False, reduce_fn=ctx.strategy.reduce_fn,
                                        device=ctx.strategy.root_device)
        #: the loaders and batch counts of the current run
        self.loaders: list[Any] = []
        self.limits: list[int | float] = []
        counts = ctx.eval_counts
        #: the owner of this loop's batch counts (``trainer.<stage>_loop.batch_progress``); the sanity check's
        #: batches are not counted, as in Lightning
        self.batch_counter: BatchCounter = (
            BatchCounter() if stage == RunningStage.SANITY_CHECKING
            else counts.test if stage == RunningStage.TESTING
            else counts.validate if ctx.fn == TrainerFn.VALIDATING
            else counts.fit_val
        )
        # the x-axis of step-level logged values: batches seen per dataloader, counted across the runs of
        # this loop (a fit's validations) until its loaders are replaced (reloaded)
        self._seen_batches: dict[int, int] = {}
        self._seen_loaders: list[Any] | None = None

    def replace_loaders(self, loaders: list[Any], limits: list[int | float]) -> None:
        """Run on other loaders (same count); call from ``on_<stage>_start``, before the batches."""
        _replace_loaders(self, loaders, limits)

    def _grad_context(self) -> Any:
        return torch.inference_mode() if self._inference_mode else torch.no_grad()

    def run(self, loaders: list[Any], limits: list[int | float]) -> list[dict[str, Any]]:
        """Evaluate; return one dict of epoch-level logged metrics (tensors) per dataloader."""
        ctx = self.ctx
        hooks = ctx.hooks
        module = ctx.module
        metrics = ctx.metrics
        prefix = self._prefix
        sanity = self.stage == RunningStage.SANITY_CHECKING
        self.loaders, self.limits = loaders, limits
        self.results.clear()  # this run's keys may differ from the last one's (its Metrics were reset then)
        metrics.collect_into(self.results)
        modes = _capture_modes(module)
        hooks.module(f"on_{prefix}_model_eval")
        combined = _combined_in_parallel(loaders)
        if combined is not None:
            # the per-loader limits (this run's: a sanity check's are smaller) bound the combined iteration
            combined._limits = list(limits)
            length = sized_len(combined)
            limits = [math.inf if length is None else length]
        multiple = len(loaders) > 1
        step_name = f"{prefix}_step"
        # the module's step itself when the strategy would only forward to it (decided once per run)
        step_fn = getattr(module if step_name in hooks.plain_steps else ctx.strategy, step_name)
        batch_start_hook, batch_end_hook = f"on_{prefix}_batch_start", f"on_{prefix}_batch_end"
        active = hooks.active
        loader_name = "val_dataloader" if prefix == "validation" else f"{prefix}_dataloader"
        # `<stage>_step(self, dataloader_iter)`: the step fetches its own batches (decided once per run)
        iter_mode = takes_dataloader_iter(getattr(module, step_name))
        if iter_mode:
            warn_experimental(step_name)
        _check_dataloader_idx_signature(module, prefix, loader_name, multiple, check_step=not iter_mode)
        # `batch_idx` is passed to the step only when its signature can take it (decided once per run)
        pass_batch_idx = _takes_batch_idx(getattr(module, step_name))
        counter = self.batch_counter
        counter.start_run()
        if loaders is not self._seen_loaders:
            self._seen_loaders, self._seen_batches = loaders, {}
        seen_batches = self._seen_batches
        profiler = ctx.profiler
        next_action = f"[_EvaluationLoop].{'val' if prefix == 'validation' else prefix}_next"
        try:
            with self._grad_context():
                hooks.both(f"on_{prefix}_start")
                hooks.both(f"on_{prefix}_epoch_start")
                loaders, limits = self.loaders, self.limits  # a start hook may have replaced them
                if iter_mode:
                    run_eval_steps(self, loaders, limits, step_name, step_fn, multiple, sanity,
                                   partial(_batches, profiler=profiler, action=next_action))
                    loaders = []  # all batches done
                for dl_idx, (loader, limit) in enumerate(zip(loaders, limits)):
                    module.__dict__["_current_dataloader_idx"] = dl_idx if multiple else None
                    eval_step_count = seen_batches.get(dl_idx, 0)
                    transfer = hooks.batch_transfer(dl_idx)
                    for batch_idx, batch in _batches(loader, limit, profiler, next_action):
                        batch = transfer(batch)
                        extra = (dl_idx,) if multiple else ()
                        self.results.batch_start(batch, dl_idx if multiple else None)
                        if batch_start_hook in active:
                            hooks.both(batch_start_hook, batch, batch_idx, *extra)
                        output = (hooks.run_as(step_name, step_fn, batch, batch_idx, *extra) if pass_batch_idx
                                  else hooks.run_as(step_name, step_fn, batch, *extra))
                        if batch_end_hook in active:
                            hooks.both(batch_end_hook, output, batch, batch_idx, *extra)
                        metrics.publish_eval_step(self.results, eval_step_count, sanity)
                        eval_step_count += 1
                        counter.current += 1
                    if not sanity:
                        seen_batches[dl_idx] = eval_step_count
                module.__dict__["_current_dataloader_idx"] = None
                self.results.batch_start(None, None)
                hooks.both(f"on_{prefix}_epoch_end")
                outputs = self._per_dataloader(metrics.publish_eval_epoch(self.results, sanity), len(self.loaders))
                hooks.both(f"on_{prefix}_end")
        finally:
            self.results.reset()  # the values are out; logged Metrics start the next evaluation afresh
            module.__dict__["_current_dataloader_idx"] = None
            _restore_modes(module, modes)
            metrics.collect_into(None)
        hooks.module(f"on_{prefix}_model_train")
        return outputs

    def _per_dataloader(self, log: dict[str, Any] | None, num_loaders: int) -> list[dict[str, Any]]:
        """Split the epoch metrics (still tensors) by dataloader: each dataloader's dict holds what was logged
        while it ran (with or without the ``/dataloader_idx_N`` suffix) and what was logged outside any
        dataloader (epoch-level hooks). ``None`` (a sanity check, whose metrics are not reported): no results."""
        if log is None:
            return []
        # the dataloader each key was logged under (None: outside the batches, e.g. in on_validation_epoch_end)
        owner = {key: idx for idx, keys in self.results.dataloader_keys().items() for key in keys}

        def belongs(key: str, idx: int) -> bool:
            if key in owner:
                return owner[key] is None or owner[key] == idx
            return key.endswith(f"/dataloader_idx_{idx}") or "/dataloader_idx_" not in key

        return [{k: v for k, v in log.items() if belongs(k, idx)} for idx in range(num_loaders)]


class PredictionLoop:
    """Runs ``predict_step`` over loaders and collects the predictions.

    With a ``BasePredictionWriter`` among the callbacks, each ``DataLoader`` is rebuilt around a
    batch sampler that records the dataset indices of every batch: ``current_batch_indices`` (the
    batch being predicted) and ``epoch_batch_indices`` (per dataloader, per batch) are what the
    writer receives.
    """

    def __init__(self, ctx: RunContext, inference_mode: bool, return_predictions: bool | None) -> None:
        self.ctx = ctx
        self._inference_mode = inference_mode
        self.return_predictions = _resolve_return_predictions(return_predictions, ctx.strategy)
        self._predictions: list[list[Any]] = []
        self.current_batch_indices: list[int] = []
        self.epoch_batch_indices: list[list[list[int]]] = []
        #: the loaders and batch counts of the current run
        self.loaders: list[Any] = []
        self.limits: list[int | float] = []
        #: the owner of the prediction batch counts (``trainer.predict_loop.batch_progress``)
        self.batch_counter: BatchCounter = ctx.eval_counts.predict

    def replace_loaders(self, loaders: list[Any], limits: list[int | float]) -> None:
        """Run on other loaders (same count); call from ``on_predict_start``, before the batches."""
        _replace_loaders(self, loaders, limits)

    @property
    def predictions(self) -> list[Any]:
        """The predictions kept so far (per dataloader when there are several)."""
        if not self._predictions:
            return self._predictions
        return self._predictions[0] if len(self._predictions) == 1 else self._predictions

    def run(self, loaders: list[Any], limits: list[int | float]) -> list[Any] | None:
        from torchbolt.callbacks.prediction_writer import BasePredictionWriter, _seen_batch_indices, _with_batch_indices

        ctx = self.ctx
        hooks = ctx.hooks
        module = ctx.module
        multiple = len(loaders) > 1
        iter_mode = takes_dataloader_iter(module.predict_step)
        if iter_mode:
            warn_experimental("predict_step")
        _check_dataloader_idx_signature(module, "predict", "predict_dataloader", multiple, check_step=not iter_mode)
        writers = [cb for cb in ctx.callbacks if isinstance(cb, BasePredictionWriter)]
        if writers and iter_mode:
            raise NotImplementedError(
                "A `BasePredictionWriter` callback cannot be used with `predict_step(self, dataloader_iter)`: the"
                " batch indices it writes are unknown when the step fetches its own batches."
            )
        track_indices = bool(writers)
        keep_for_epoch = any(w.interval.on_epoch for w in writers)
        self.loaders, self.limits = loaders, limits
        modes = _capture_modes(module)
        hooks.module("on_predict_model_eval")
        self._predictions = [[] for _ in loaders]
        self.epoch_batch_indices = [[] for _ in loaders]
        self.current_batch_indices = []
        counter = self.batch_counter
        counter.start_run()
        context = torch.inference_mode() if self._inference_mode else torch.no_grad()
        warned_none = False
        try:
            with context:
                hooks.both("on_predict_start")
                hooks.both("on_predict_epoch_start")
                loaders, limits = self.loaders, self.limits  # a start hook may have replaced them
                if track_indices:
                    loaders = [_with_batch_indices(loader) for loader in loaders]
                if iter_mode:
                    run_predict_steps(self, loaders, limits, multiple, self.return_predictions,
                                      partial(_batches, profiler=ctx.profiler, action="[_PredictionLoop].predict_next"))
                    loaders = []  # all batches done
                for dl_idx, (loader, limit) in enumerate(zip(loaders, limits)):
                    transfer = hooks.batch_transfer(dl_idx)
                    for batch_idx, batch in _batches(loader, limit, ctx.profiler,
                                                     "[_PredictionLoop].predict_next"):
                        if track_indices:
                            self._record_batch_indices(loader, dl_idx, batch_idx, keep_for_epoch,
                                                       _seen_batch_indices(loader))
                        batch = transfer(batch)
                        extra = (dl_idx,) if multiple else ()
                        hooks.both("on_predict_batch_start", batch, batch_idx, *extra)
                        output = hooks.run_as("predict_step", ctx.strategy.predict_step, batch, batch_idx, *extra)
                        if output is None and not warned_none:  # once per `predict` call
                            warned_none = True
                            rank_zero_warn(
                                "`predict_step` returned None, so trainer.predict returned None for this batch;"
                                " if that is on purpose, ignore this warning."
                            )
                        if self.return_predictions or keep_for_epoch:
                            self._predictions[dl_idx].append(output)
                        hooks.both("on_predict_batch_end", output, batch, batch_idx, *extra)
                        counter.current += 1
                hooks.both("on_predict_epoch_end")
                hooks.both("on_predict_end")
        finally:
            _restore_modes(module, modes)
        self.epoch_batch_indices = []
        if not self.return_predictions:
            self._predictions = []
            return None
        return self.predictions

    def _record_batch_indices(self, loader: Any, dl_idx: int, batch_idx: int, keep_for_epoch: bool,
                              seen: list[list[int]] | None) -> None:
        if seen is None:
            from torchbolt.callbacks.prediction_writer import _has_no_indices

            if not _has_no_indices(loader):
                _warning_cache.warn(
                    f"Couldn't infer the batch indices fetched from your dataloader: `{type(loader).__name__}`")
            self.current_batch_indices = []
            return
        self.current_batch_indices = seen[batch_idx]
        if keep_for_epoch:
            self.epoch_batch_indices[dl_idx].append(seen[batch_idx])


def _resolve_return_predictions(requested: bool | None, strategy: Any) -> bool:
    """``trainer.predict(return_predictions=...)``: ``None`` means yes, except in spawned processes.

    Each spawned process predicts its own share of the data, so the predictions one of them could hand
    back are not the predictions of the dataset: there, ``None`` means no and ``True`` is refused.
    """
    from torchbolt.strategies.launchers.multiprocessing import MultiProcessingLauncher

    spawned = isinstance(strategy.launcher, MultiProcessingLauncher)
    if requested and spawned:
        raise MisconfigurationException(
            f"`trainer.predict(return_predictions=True)` is not available with `{type(strategy).__name__}`, whose"
            " processes are spawned or forked and each predict a share of the data: `return_predictions` should be"
            " set to `False` (the default there); write the predictions with a `BasePredictionWriter` callback."
        )
    return not spawned if requested is None else bool(requested)


def check_eval_step(module: Any, stage: Literal["validate", "test"]) -> None:
    """Raise when ``trainer.<stage>()`` is called but ``module`` has no ``<stage>_step``."""
    from torchbolt.core.module import LightningModule
    from torchbolt.utilities.parsing import is_overridden

    step = {"validate": "validation_step", "test": "test_step"}[stage]
    if not is_overridden(step, module, LightningModule):
        raise MisconfigurationException(
            f"No `{step}()` method defined to run `Trainer.{stage}`. Implement `{step}` in your LightningModule."
        )
