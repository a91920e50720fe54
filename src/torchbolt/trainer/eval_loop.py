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
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from torchbolt.profilers.profiler import Profiler, profiled_iter
from torchbolt.trainer.logging import ResultCollection
from torchbolt.trainer.states import RunningStage
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import WarningCache

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


def _check_dataloader_idx_signature(step: Any, step_name: str, loader_name: str, multiple: bool) -> None:
    """Raise when ``step`` cannot take the ``dataloader_idx`` the loop will (or will not) pass."""
    try:
        params = inspect.signature(step).parameters
    except (TypeError, ValueError):
        return
    has_var = any(p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD) for p in params.values())
    idx = params.get("dataloader_idx")
    if multiple and idx is None and not has_var:
        raise MisconfigurationException(
            f"You provided multiple `{loader_name}`, but no `dataloader_idx` argument in `{step_name}()`."
            " Try adding `dataloader_idx=0` to its signature."
        )
    if not multiple and idx is not None and idx.default is inspect.Parameter.empty:
        raise MisconfigurationException(
            f"You provided only a single `{loader_name}`, but have included `dataloader_idx` in `{step_name}()`."
            " Either remove the argument or give it a default value i.e. `dataloader_idx=0`."
        )


def _batches(loader: Any, limit: int | float, profiler: Profiler | None = None,
             action: str = "") -> Iterator[tuple[int, Any]]:
    if limit == 0:
        return
    for batch_idx, batch in enumerate(profiled_iter(loader, profiler, action)):
        yield batch_idx, batch
        if batch_idx + 1 >= limit:
            return


class EvaluationLoop:
    """Runs ``validation_step`` or ``test_step`` over loaders and reduces the logged metrics."""

    def __init__(self, ctx: RunContext, stage: RunningStage, inference_mode: bool) -> None:
        self.ctx = ctx
        self.stage = stage
        self._inference_mode = inference_mode
        self._prefix = _HOOK_PREFIX[stage]
        self.results = ResultCollection(training=False, reduce_fn=ctx.strategy.reduce_fn,
                                        device=ctx.strategy.root_device)
        # the x-axis of step-level logged values: batches seen per dataloader, counted across the runs of
        # this loop (a fit's validations) until its loaders are replaced (reloaded)
        self._seen_batches: dict[int, int] = {}
        self._seen_loaders: list[Any] | None = None

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
        self.results.clear()  # this run's keys may differ from the last one's (its Metrics were reset then)
        metrics.collect_into(self.results)
        modes = _capture_modes(module)
        hooks.module(f"on_{prefix}_model_eval")
        multiple = len(loaders) > 1
        step_name = f"{prefix}_step"
        # the module's step itself when the strategy would only forward to it (decided once per run)
        step_fn = getattr(module if step_name in hooks.plain_steps else ctx.strategy, step_name)
        batch_start_hook, batch_end_hook = f"on_{prefix}_batch_start", f"on_{prefix}_batch_end"
        active = hooks.active
        loader_name = "val_dataloader" if prefix == "validation" else f"{prefix}_dataloader"
        _check_dataloader_idx_signature(getattr(module, step_name), step_name, loader_name, multiple)
        if loaders is not self._seen_loaders:
            self._seen_loaders, self._seen_batches = loaders, {}
        seen_batches = self._seen_batches
        profiler = ctx.profiler
        next_action = f"[_EvaluationLoop].{'val' if prefix == 'validation' else prefix}_next"
        try:
            with self._grad_context():
                hooks.both(f"on_{prefix}_start")
                hooks.both(f"on_{prefix}_epoch_start")
                for dl_idx, (loader, limit) in enumerate(zip(loaders, limits)):
                    module.__dict__["_current_dataloader_idx"] = dl_idx if multiple else None
                    eval_step_count = seen_batches.get(dl_idx, 0)
                    for batch_idx, batch in _batches(loader, limit, profiler, next_action):
                        batch = hooks.transfer_batch(batch, dl_idx)
                        extra = (dl_idx,) if multiple else ()
                        self.results.batch_start(batch, dl_idx if multiple else None)
                        if batch_start_hook in active:
                            hooks.both(batch_start_hook, batch, batch_idx, *extra)
                        output = hooks.run_as(step_name, step_fn, batch, batch_idx, *extra)
                        if batch_end_hook in active:
                            hooks.both(batch_end_hook, output, batch, batch_idx, *extra)
                        metrics.publish_eval_step(self.results, eval_step_count, sanity)
                        eval_step_count += 1
                    if not sanity:
                        seen_batches[dl_idx] = eval_step_count
                module.__dict__["_current_dataloader_idx"] = None
                self.results.batch_start(None, None)
                hooks.both(f"on_{prefix}_epoch_end")
                outputs = self._per_dataloader(metrics.publish_eval_epoch(self.results, sanity), len(loaders))
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

    def __init__(self, ctx: RunContext, inference_mode: bool, return_predictions: bool) -> None:
        self.ctx = ctx
        self._inference_mode = inference_mode
        self.return_predictions = return_predictions
        self._predictions: list[list[Any]] = []
        self.current_batch_indices: list[int] = []
        self.epoch_batch_indices: list[list[list[int]]] = []

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
        _check_dataloader_idx_signature(module.predict_step, "predict_step", "predict_dataloader", multiple)
        writers = [cb for cb in ctx.callbacks if isinstance(cb, BasePredictionWriter)]
        track_indices = bool(writers)
        keep_for_epoch = any(w.interval.on_epoch for w in writers)
        if track_indices:
            loaders = [_with_batch_indices(loader) for loader in loaders]
        modes = _capture_modes(module)
        hooks.module("on_predict_model_eval")
        self._predictions = [[] for _ in loaders]
        self.epoch_batch_indices = [[] for _ in loaders]
        self.current_batch_indices = []
        context = torch.inference_mode() if self._inference_mode else torch.no_grad()
        try:
            with context:
                hooks.both("on_predict_start")
                hooks.both("on_predict_epoch_start")
                for dl_idx, (loader, limit) in enumerate(zip(loaders, limits)):
                    for batch_idx, batch in _batches(loader, limit, ctx.profiler,
                                                     "[_PredictionLoop].predict_next"):
                        if track_indices:
                            self._record_batch_indices(loader, dl_idx, batch_idx, keep_for_epoch,
                                                       _seen_batch_indices(loader))
                        batch = hooks.transfer_batch(batch, dl_idx)
                        extra = (dl_idx,) if multiple else ()
                        hooks.both("on_predict_batch_start", batch, batch_idx, *extra)
                        output = hooks.run_as("predict_step", ctx.strategy.predict_step, batch, batch_idx, *extra)
                        if self.return_predictions or keep_for_epoch:
                            self._predictions[dl_idx].append(output)
                        hooks.both("on_predict_batch_end", output, batch, batch_idx, *extra)
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
            _warning_cache.warn(f"Couldn't infer the batch indices fetched from your dataloader: `{type(loader).__name__}`")
            self.current_batch_indices = []
            return
        self.current_batch_indices = seen[batch_idx]
        if keep_for_epoch:
            self.epoch_batch_indices[dl_idx].append(seen[batch_idx])


def check_eval_step(module: Any, stage: Literal["validate", "test"]) -> None:
    """Raise when ``trainer.<stage>()`` is called but ``module`` has no ``<stage>_step``."""
    from torchbolt.core.module import LightningModule
    from torchbolt.utilities.parsing import is_overridden

    step = {"validate": "validation_step", "test": "test_step"}[stage]
    if not is_overridden(step, module, LightningModule):
        raise MisconfigurationException(
            f"No `{step}()` method defined to run `Trainer.{stage}`. Implement `{step}` in your LightningModule."
        )
