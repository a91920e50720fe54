"""The sink behind ``self.log``: step values, epoch reductions, and what reaches loggers and callbacks.

Values stay on their device as tensors. Epoch reductions are folded lazily (every ``_FOLD_EVERY``
logged values and at epoch end), so a ``self.log`` call costs a list append on the hot path.
Converting to Python numbers (a host sync; one device->host copy for all values, see ``flush.py``)
happens only when a logger flushes or the progress bar refreshes.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import torch
from torch import Tensor

from torchbolt.core import module as _core_module
from torchbolt.trainer.dataloader_iter import NO_BATCH, check_log_batch_size
from torchbolt.trainer.flush import LoggerSaves, to_numbers
from torchbolt.utilities.data import extract_batch_size
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import WarningCache

if TYPE_CHECKING:
    from torchbolt.trainer.states import Progress

_FOLD_EVERY = 64
_DATALOADER_SUFFIX = "/dataloader_idx_{}"
_warning_cache = WarningCache()

# (allowed on_step, allowed on_epoch, default on_step, default on_epoch); None: logging not allowed
_STEP_HOOK = ((False, True), (False, True), True, False)
_EVAL_STEP_HOOK = ((False, True), (False, True), False, True)
_EPOCH_HOOK = ((False,), (True,), False, True)
_HOOK_LOG_OPTIONS: dict[str, tuple[Any, ...] | None] = {
    **dict.fromkeys(
        ("training_step", "on_train_batch_start", "on_train_batch_end", "on_before_backward", "backward",
         "on_after_backward", "on_before_optimizer_step", "optimizer_step", "configure_gradient_clipping",
         "clip_gradients", "on_before_zero_grad", "optimizer_zero_grad"),
        _STEP_HOOK,
    ),
    **dict.fromkeys(
        ("validation_step", "test_step", "on_validation_batch_start", "on_validation_batch_end",
         "on_test_batch_start", "on_test_batch_end"),
        _EVAL_STEP_HOOK,
    ),
    **dict.fromkeys(
        ("on_train_start", "on_train_epoch_start", "on_train_epoch_end", "on_validation_start",
         "on_validation_epoch_start", "on_validation_epoch_end", "on_test_start", "on_test_epoch_start",
         "on_test_epoch_end"),
        _EPOCH_HOOK,
    ),
    **dict.fromkeys(
        ("lr_scheduler_step", "on_fit_start", "on_fit_end", "on_sanity_check_start", "on_sanity_check_end",
         "on_train_end", "on_validation_end", "on_test_end", "on_predict_start", "on_predict_end",
         "on_predict_epoch_start", "on_predict_epoch_end", "on_before_batch_transfer", "transfer_batch_to_device",
         "on_after_batch_transfer", "on_predict_batch_start", "on_predict_batch_end", "on_exception", "state_dict",
         "on_save_checkpoint", "on_load_checkpoint", "load_state_dict", "setup", "teardown", "configure_model",
         "predict_step", "configure_optimizers", "train_dataloader", "val_dataloader", "test_dataloader",
         "predict_dataloader", "prepare_data", "configure_callbacks", "on_validation_model_eval",
         "on_test_model_eval", "on_validation_model_train", "on_test_model_train", "on_validation_model_zero_grad"),
        None,
    ),
}

# the reductions `self.log(reduce_fx=...)` accepts: a name (any case; "avg" is "mean"), the torch function, or
# the Python builtin of the same name
_REDUCE_FX: dict[Any, str] = {
    "mean": "mean", "avg": "mean", torch.mean: "mean",
    "sum": "sum", torch.sum: "sum", sum: "sum",
    "max": "max", torch.max: "max", max: "max",
    "min": "min", torch.min: "min", min: "min",
}


def _reduce_name(name: str, reduce_fx: Any) -> str:
    """The reduction ``reduce_fx`` stands for (``"mean"``, ``"sum"``, ``"max"`` or ``"min"``); checked once per key.

    Raises:
        MisconfigurationException: for any other reduction (a custom one belongs in a torchmetrics ``Metric``).
    """
    key = reduce_fx.lower() if isinstance(reduce_fx, str) else reduce_fx
    try:
        return _REDUCE_FX[key]
    except (KeyError, TypeError):
        raise MisconfigurationException(
            f"`self.log({name!r}, ..., reduce_fx={reduce_fx!r})`: Only `self.log(..., reduce_fx={{min,max,mean,sum}})`"
            " are supported: pass 'mean', 'sum', 'max' or 'min' (any case), the torch function or the Python builtin"
            " of that name. For a custom reduction, log a `torchmetrics.Metric` instead."
        ) from None


def _log_levels(fx: str | None, name: str, on_step: bool | None, on_epoch: bool | None) -> tuple[bool, bool]:
    if fx is None:
        raise MisconfigurationException(
            f"`self.log({name!r}, ...)` was called outside of a hook the Trainer runs; log from a step or an"
            " epoch-level hook, or write to `self.logger.experiment` directly."
        )
    options = _HOOK_LOG_OPTIONS.get(fx, _EPOCH_HOOK if fx.startswith("on_") else _STEP_HOOK)
    if options is None:
        raise MisconfigurationException(
            f"You can't `self.log()` inside `{fx}`. HINT: You can still log directly to the logger by using"
            " `self.logger.experiment`."
        )
    allowed_step, allowed_epoch, default_step, default_epoch = options
    on_step = default_step if on_step is None else on_step
    on_epoch = default_epoch if on_epoch is None else on_epoch
    if not on_step and not on_epoch:
        raise MisconfigurationException(
            f"`self.log({name!r}, ..., on_step=False, on_epoch=False)` is not useful: the value would reach no"
            " logger, callback or progress bar. Set `on_step=True` and/or `on_epoch=True`."
        )
    if on_step not in allowed_step:
        raise MisconfigurationException(
            f"You can't `self.log(on_step={on_step})` inside `{fx}`, must be one of {allowed_step}."
        )
    if on_epoch not in allowed_epoch:
        raise MisconfigurationException(
            f"You can't `self.log(on_epoch={on_epoch})` inside `{fx}`, must be one of {allowed_epoch}."
        )
    return on_step, on_epoch


def _check_metric_attribute(module: Any, name: str, metric: Any) -> None:
    """A logged ``Metric`` must be one of ``module``'s submodules: its state is saved and restored with the
    module, and it is reset and computed at the loop's epoch ends. Checked once per logged key.

    Raises:
        MisconfigurationException: when it is not, naming the module's metric attributes (if any).
    """
    attributes = {id(sub): sub_name for sub_name, sub in module.named_modules() if _is_metric(sub)}
    if id(metric) in attributes:
        return
    if not attributes:
        raise MisconfigurationException(
            f"`self.log({name!r}, metric)`: the torchmetrics `Metric` logged is not an attribute of the"
            " `LightningModule`. You can fix this by setting an attribute for the metric in your `LightningModule`"
            " (e.g. `self.accuracy = Accuracy(...)` in `__init__`) and logging that attribute."
        )
    raise MisconfigurationException(
        f"`self.log({name!r}, metric)`: the torchmetrics `Metric` logged is not one of the `LightningModule`'s"
        f" attributes. Log one of them, or name it: call `self.log({name}, ..., metric_attribute=name)` where"
        f" `name` is one of {list(attributes.values())}."
    )


def _is_metric(value: Any) -> bool:
    # duck-typed torchmetrics.Metric, so torchmetrics is never imported by us
    return hasattr(value, "compute") and hasattr(value, "update") and hasattr(value, "reset") and hasattr(
        value, "_forward_cache"
    )


@dataclass(frozen=True)
class _Meta:
    """How one key logged from one hook is reduced and where it goes. Built once per key."""

    fx: str
    name: str
    prog_bar: bool
    logger: bool
    on_step: bool
    on_epoch: bool
    reduce: str
    sync_dist: bool
    sync_dist_group: Any
    add_dataloader_idx: bool
    dataloader_idx: int | None
    rank_zero_only: bool
    enable_graph: bool

    @property
    def key(self) -> str:
        suffix = _DATALOADER_SUFFIX.format(self.dataloader_idx) if (
            self.add_dataloader_idx and self.dataloader_idx is not None) else ""
        return self.name + suffix

    def forked_key(self, on_step: bool) -> str:
        suffix = _DATALOADER_SUFFIX.format(self.dataloader_idx) if (
            self.add_dataloader_idx and self.dataloader_idx is not None) else ""
        if self.on_step and self.on_epoch:
            return f"{self.name}{'_step' if on_step else '_epoch'}{suffix}"
        return self.name + suffix


class _Entry:
    """One logged key: its last step value and its running epoch reduction."""

    __slots__ = ("args", "buffer_bs", "buffer_values", "computed", "count", "dtype", "key", "key_epoch", "key_step",
                 "last", "meta", "metric", "step_only", "synced", "total", "updated")

    def __init__(self, meta: _Meta, args: tuple[Any, ...], metric: Any) -> None:
        self.meta = meta
        self.args = args
        self.metric = metric
        self.key = meta.key
        self.key_step = meta.forked_key(True)
        self.key_epoch = meta.forked_key(False)
        self.last: Tensor | None = None
        self.total: Tensor | None = None
        self.count = 0
        self.buffer_values: list[Tensor] = []
        self.buffer_bs: list[int] = []
        self.dtype: torch.dtype | None = None
        self.computed: Tensor | None = None
        self.updated = False
        #: ``(batch number, last, its reduction across processes)`` while the step value is written but not
        #: yet consumed
        self.synced: tuple[int, Tensor, Tensor] | None = None
        #: only the step value is kept, detached (``self.log(name, loss)`` in ``training_step``)
        self.step_only = metric is None and meta.on_step and not meta.on_epoch and not meta.enable_graph

    def fold(self) -> None:
        """Reduce the buffered values into the running total (device ops only, no host sync)."""
        values, sizes = self.buffer_values, self.buffer_bs
        if not values:
            return
        stacked = torch.stack(values)
        reduce = self.meta.reduce
        if reduce == "mean":
            if len(set(sizes)) == 1:
                part = stacked.sum() * sizes[0]
            else:
                part = sum(v * b for v, b in zip(values, sizes))  # type: ignore[assignment]
            self.total = part if self.total is None else self.total + part
            self.count += sum(sizes)
        elif reduce == "sum":
            part = stacked.sum()
            self.total = part if self.total is None else self.total + part
        elif reduce == "max":
            part = stacked.max()
            self.total = part if self.total is None else torch.maximum(self.total, part)
        else:
            part = stacked.min()
            self.total = part if self.total is None else torch.minimum(self.total, part)
        self.buffer_values = []
        self.buffer_bs = []

    def compute(self, reduce_fn: Callable[[Tensor, Any, str], Tensor]) -> Tensor | None:
        if self.metric is not None:
            if self.count == 0:
                return None  # not logged since the last reset: computing would read an empty metric
            # torchmetrics synchronizes its own state across processes inside compute()
            self.computed = self.metric.compute()
            return self.computed
        self.fold()
        if self.total is None:
            return None
        total = self.total
        if self.meta.sync_dist and not self.meta.rank_zero_only:
            group = self.meta.sync_dist_group
            if self.meta.reduce == "mean":
                count = torch.tensor(float(self.count), device=total.device, dtype=total.dtype)
                self.computed = reduce_fn(total, group, "sum") / reduce_fn(count, group, "sum")
                return self.computed
            total = reduce_fn(total, group, self.meta.reduce)
        self.computed = total / self.count if self.meta.reduce == "mean" else total
        return self.computed

    def reset(self) -> None:
        self.last = None
        self.total = None
        self.count = 0
        self.buffer_values = []
        self.buffer_bs = []
        self.computed = None
        self.updated = False
        if self.metric is not None:
            self.metric.reset()


class ResultCollection:
    """Everything ``self.log`` recorded during one loop run (a training epoch, or one evaluation).

    Args:
        training: this collects the training loop's logs (step values also reach callback metrics).
        reduce_fn: ``(tensor, group, op)`` -> reduced tensor, for ``sync_dist`` (the strategy's reduce).
        device: where Python numbers logged with ``self.log`` are put.
    """

    def __init__(self, training: bool, reduce_fn: Callable[[Tensor, Any, str], Tensor],
                 device: torch.device | None = None) -> None:
        self.training = training
        self._reduce_fn = reduce_fn
        self.device = device or torch.device("cpu")
        self._entries: dict[tuple[str, str, int | None], _Entry] = {}
        self._updated: list[_Entry] = []
        self.batch: Any = None
        self._batch_size: int | None = None
        self.dataloader_idx: int | None = None
        #: counts batches, the same on every process: a reduction made for this batch is reused only within it
        self._batch_number = 0
        #: the module whose attributes logged ``Metric`` objects must be (set by the sink; ``None``: not checked)
        self.module: Any = None

    # ------------------------------------------------------------------ per batch
    def batch_start(self, batch: Any, dataloader_idx: int | None = None) -> None:
        self.batch = batch
        self._batch_number += 1
        self._batch_size = None
        self.dataloader_idx = dataloader_idx

    def _current_batch_size(self) -> int:
        if self._batch_size is None:
            if self.batch is None:
                self._batch_size = 1
            else:
                try:
                    self._batch_size = extract_batch_size(self.batch)
                except MisconfigurationException:
                    _warning_cache.warn(
                        "Could not infer the batch size to weight epoch means; using 1. Pass"
                        " `self.log(..., batch_size=N)` to weight them correctly."
                    )
                    self._batch_size = 1
        return self._batch_size

    def log(
        self,
        fx: str | None,
        name: str,
        value: Any,
        prog_bar: bool,
        logger: bool | None,
        on_step: bool | None,
        on_epoch: bool | None,
        reduce_fx: str | Callable[..., Any],
        enable_graph: bool,
        sync_dist: bool,
        sync_dist_group: Any,
        add_dataloader_idx: bool,
        batch_size: int | None,
        rank_zero_only: bool,
        metric_attribute: str | None = None,
    ) -> None:
        """Record one ``self.log`` call (see ``LightningModule.log`` for the arguments)."""
        if self.batch is NO_BATCH:
            check_log_batch_size(self.batch, batch_size)
        dl_idx = self.dataloader_idx
        entry = self._entries.get((fx, name, dl_idx))  # type: ignore[arg-type]
        args = (prog_bar, logger, on_step, on_epoch, reduce_fx, enable_graph, sync_dist, add_dataloader_idx,
                rank_zero_only)
        if entry is None or entry.args != args:
            entry = self._new_entry(fx, name, value, args, sync_dist_group, dl_idx, entry, metric_attribute)
        if entry.step_only and isinstance(value, Tensor) and value.ndim == 0 and value.dtype == entry.dtype:
            # the steady state of `self.log(name, loss)` in `training_step`: keep the detached step value
            entry.last = value.detach()
        elif entry.metric is not None:
            self._log_metric(entry, name, value)
            return
        else:
            self._record(entry, name, value, batch_size)
        if not entry.updated:
            entry.updated = True
            self._updated.append(entry)

    def _record(self, entry: _Entry, name: str, value: Any, batch_size: int | None) -> None:
        """Keep a logged value (not a ``Metric``) as the step value and/or in the epoch's buffer."""
        meta = entry.meta
        if isinstance(value, Tensor) and value.ndim == 0 and value.dtype == entry.dtype:
            # a scalar of the dtype this key was first logged with
            if not meta.enable_graph:
                value = value.detach()
        else:
            value = self._to_tensor(name, value, entry)
        if meta.on_step:
            entry.last = value
        if meta.on_epoch:
            entry.buffer_values.append(value)
            if meta.reduce == "mean":
                entry.buffer_bs.append(self._current_batch_size() if batch_size is None else int(batch_size))
            if len(entry.buffer_values) >= _FOLD_EVERY:
                entry.fold()

    def _log_metric(self, entry: _Entry, name: str, value: Any) -> None:
        """A torchmetrics ``Metric`` logged again: it keeps its own state; remember this batch's value."""
        if value is not entry.metric:
            raise MisconfigurationException(
                f"`self.log({name!r}, ...)` was first called with a Metric object and now with another value."
            )
        if entry.meta.on_step:
            # the value of this batch is what the metric's forward() returned (None after update() only)
            cache = value._forward_cache
            entry.last = cache.detach() if isinstance(cache, Tensor) else None
        entry.count += 1
        if not entry.updated:
            entry.updated = True
            self._updated.append(entry)

    def _new_entry(self, fx: str | None, name: str, value: Any, args: tuple[Any, ...], group: Any, dl_idx: int | None,
                   previous: _Entry | None, metric_attribute: str | None = None) -> _Entry:
        prog_bar, logger, on_step, on_epoch, reduce_fx, enable_graph, sync_dist, add_dataloader_idx, rz = args
        if previous is not None and previous.updated:
            raise MisconfigurationException(
                f"You called `self.log({name}, ...)` twice in `{fx}` with different arguments. This is not allowed:"
                " log it with the same arguments each time, or under another name."
            )
        if not isinstance(name, str):
            raise MisconfigurationException(f"`self.log(name={name!r})`: the name must be a string.")
        if _DATALOADER_SUFFIX.format("") in name:
            raise MisconfigurationException(
                f"`self.log({name!r}, ...)`: the name contains '/dataloader_idx_', which is reserved (you called"
                f" `self.log` with the key `{name}`); torchbolt adds that suffix itself."
            )
        on_step, on_epoch = _log_levels(fx, name, on_step, on_epoch)
        reduce = _reduce_name(name, reduce_fx)
        metric = value if _is_metric(value) else None
        if metric is not None and metric_attribute is None and self.module is not None:
            _check_metric_attribute(self.module, name, metric)
        meta = _Meta(
            fx=fx,  # type: ignore[arg-type]
            name=name, prog_bar=bool(prog_bar), logger=True if logger is None else bool(logger),
            on_step=on_step, on_epoch=on_epoch, reduce=reduce, sync_dist=bool(sync_dist),
            sync_dist_group=group, add_dataloader_idx=bool(add_dataloader_idx), dataloader_idx=dl_idx,
            rank_zero_only=bool(rz), enable_graph=bool(enable_graph),
        )
        entry = _Entry(meta, args, metric)
        if previous is not None and previous.metric is None and metric is None and previous.meta == meta:
            # same settings spelled differently (torch.mean vs "mean"), e.g. after a checkpoint restore
            entry.total, entry.count, entry.dtype = previous.total, previous.count, previous.dtype
            entry.buffer_values, entry.buffer_bs = previous.buffer_values, previous.buffer_bs
        self._entries[(fx, name, dl_idx)] = entry  # type: ignore[index]
        return entry

    def _to_tensor(self, name: str, value: Any, entry: _Entry) -> Tensor:
        if isinstance(value, Tensor):
            if value.numel() != 1:
                raise ValueError(
                    f"`self.log({name!r}, tensor)` was called, but the tensor must have a single element, got"
                    f" shape {tuple(value.shape)}. You can try doing `self.log({name!r}, tensor.mean())`"
                )
            if not entry.meta.enable_graph:
                value = value.detach()
            if value.ndim:
                value = value.reshape(())
        elif isinstance(value, (numbers.Number, bool)) and not isinstance(value, complex):
            if self.device.type == "cuda":
                # `torch.tensor(x, device="cuda")` is a synchronous copy (a host sync every step); a copy
                # from pinned memory is queued on the stream instead
                value = torch.tensor(value, dtype=torch.get_default_dtype(), pin_memory=True).to(
                    self.device, non_blocking=True)
            else:
                value = torch.tensor(value, device=self.device, dtype=torch.get_default_dtype())
        else:
            raise ValueError(
                f"`self.log({name}, {value})` was called, but `{type(value).__name__}` values cannot be logged. Log a"
                " single-element tensor, a Python number or a torchmetrics Metric (None, strings, lists, tuples and"
                " dicts cannot be logged; use `self.log_dict` for several values)."
            )
        if not value.is_floating_point():
            value = value.to(torch.get_default_dtype())
        dtype = entry.dtype
        if dtype is None:
            entry.dtype = value.dtype
        elif value.dtype != dtype:
            value = value.to(dtype)
        return value  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ outputs
    def step_outputs(self) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """``(callback, log, progress_bar)`` metrics of the step values logged since the last call."""
        callback: dict[str, Tensor] = {}
        pbar: dict[str, Tensor] = {}
        log = self.write_step_outputs(callback, pbar)
        return callback, log, pbar

    def write_step_outputs(self, callback: dict[str, Tensor], pbar: dict[str, Tensor],
                           consume: bool = True) -> dict[str, Tensor]:
        """The step values logged since the last consuming call: the callback and progress-bar ones written
        into ``callback`` and ``pbar`` (the per-step path writes straight into the Trainer's dicts), the
        logger ones returned. ``consume=False`` leaves them pending for the next call."""
        log: dict[str, Tensor] = {}
        training = self.training
        for entry in self._updated:
            entry.updated = not consume
            meta = entry.meta
            if not meta.on_step or entry.last is None:
                continue
            value = entry.last
            if meta.sync_dist and not meta.rank_zero_only:
                # one collective per value: a batch written before `on_train_batch_end` and again after it
                # reuses the reduction of the same tensor (every process decides alike: by batch number)
                cached = entry.synced
                number = self._batch_number
                if cached is not None and cached[0] == number and cached[1] is value:
                    reduced = cached[2]
                else:
                    reduced = self._reduce_fn(value, meta.sync_dist_group, meta.reduce)
                entry.synced = None if consume else (number, value, reduced)
                value = reduced
            if meta.logger:
                log[entry.key_step] = value
            if training:
                callback[entry.key] = value
                callback[entry.key_step] = value
            if meta.prog_bar:
                pbar[entry.key_step] = value
        if consume:
            self._updated = []
        return log

    def epoch_outputs(self) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """``(callback, log, progress_bar)`` metrics of the epoch reductions (computing them)."""
        callback: dict[str, Tensor] = {}
        log: dict[str, Tensor] = {}
        pbar: dict[str, Tensor] = {}
        for entry in self._entries.values():
            meta = entry.meta
            if not meta.on_epoch:
                continue
            value = entry.compute(self._reduce_fn)
            if value is None:
                continue
            if meta.logger:
                log[entry.key_epoch] = value
            callback[entry.key] = value
            callback[entry.key_epoch] = value
            if meta.prog_bar:
                pbar[entry.key_epoch] = value
        for entry in self._entries.values():
            entry.updated = False
        self._updated = []
        return callback, log, pbar

    def has_logged(self) -> bool:
        return bool(self._entries)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, metric_names: Mapping[int, str] | None = None) -> dict[str, Any]:
        """The running values as plain data (for exact resume).

        ``Metric`` objects keep their accumulated state themselves; the entry of a logged metric is
        included (as ``"metric": <its name>``) when ``metric_names`` (``id(metric)`` -> the name it has in
        the module, see ``resume.metric_names``) knows it, so that a resume computes and resets it at the
        same points as the original run.
        """
        entries: list[dict[str, Any]] = []
        for (fx, name, dl_idx), entry in self._entries.items():
            if entry.metric is not None:
                metric_name = (metric_names or {}).get(id(entry.metric))
                if metric_name is not None:
                    args = list(entry.args)
                    args[4] = entry.meta.reduce
                    last = entry.last.detach().cpu() if entry.last is not None else None
                    entries.append({"fx": fx, "name": name, "dataloader_idx": dl_idx, "args": args, "last": last,
                                    "count": entry.count, "updated": entry.updated, "metric": metric_name})
                continue
            # buffered values are saved as they are (not folded): folding earlier would change the
            # order of the floating-point sums, and with it the epoch value
            args = list(entry.args)
            args[4] = entry.meta.reduce  # reduce_fx as its name (a function is not plain data)

            def cpu(value: Tensor | None) -> Tensor | None:
                return value.detach().cpu() if value is not None else None

            entries.append({"fx": fx, "name": name, "dataloader_idx": dl_idx, "args": args, "last": cpu(entry.last),
                            "total": cpu(entry.total), "count": entry.count, "dtype": entry.dtype,
                            "buffer_values": [cpu(v) for v in entry.buffer_values],
                            "buffer_bs": list(entry.buffer_bs), "updated": entry.updated})
        return {"entries": entries}

    def load_state_dict(self, state: dict[str, Any], metrics: Mapping[str, Any] | None = None) -> None:
        """Restore what :meth:`state_dict` returned (entries logged with a ``sync_dist_group`` use the default group).

        The entry of a logged ``Metric`` is restored when ``metrics`` (name -> metric) has it, else dropped.
        """
        self._entries = {}
        self._updated = []
        for item in state.get("entries", []):
            metric = None
            if "metric" in item:
                metric = (metrics or {}).get(item["metric"])
                if metric is None:
                    continue
            entry = self._new_entry(item["fx"], item["name"], metric, tuple(item["args"]), None,
                                    item["dataloader_idx"], None, metric_attribute=item.get("metric"))
            device = self.device
            if metric is not None:
                entry.last = item["last"].to(device) if item["last"] is not None else None
                entry.count = int(item["count"])
                if item["updated"]:
                    entry.updated = True
                    self._updated.append(entry)
                continue
            entry.last = item["last"].to(device) if item["last"] is not None else None
            entry.total = item["total"].to(device) if item["total"] is not None else None
            entry.count = int(item["count"])
            entry.dtype = item["dtype"]
            entry.buffer_values = [v.to(device) for v in item.get("buffer_values", [])]
            entry.buffer_bs = [int(b) for b in item.get("buffer_bs", [])]
            if item["updated"]:
                entry.updated = True
                self._updated.append(entry)

    def metric_objects(self) -> list[Any]:
        """The ``Metric`` objects logged into this collection."""
        return [entry.metric for entry in self._entries.values() if entry.metric is not None]

    def reset(self) -> None:
        """Clear the running values (the entries' settings are kept, so the next epoch logs cheaply)."""
        for entry in self._entries.values():
            entry.reset()
        self._updated = []

    def clear(self) -> None:
        """Forget every entry, settings included. Logged ``Metric`` objects are not reset here: that
        happened when their values were published (:meth:`reset`)."""
        self._entries = {}
        self._updated = []

    def dataloader_keys(self) -> dict[int | None, list[str]]:
        """The epoch-level logged keys per dataloader index (for ``trainer.test`` results)."""
        keys: dict[int | None, list[str]] = {}
        for (_, _, dl_idx), entry in self._entries.items():
            if entry.meta.on_epoch and entry.meta.logger:
                keys.setdefault(dl_idx, []).append(entry.key_epoch)
        return keys


class MetricStore:
    """``trainer.callback_metrics``, ``logged_metrics`` and ``progress_bar_metrics``, as device tensors."""

    def __init__(self) -> None:
        self.callback: dict[str, Tensor] = {}
        self.logged: dict[str, Any] = {}
        self.pbar: dict[str, Any] = {}

    def update(self, callback: Mapping[str, Tensor], log: Mapping[str, Any], pbar: Mapping[str, Any]) -> None:
        if callback:
            self.callback.update(callback)
        if log:
            self.logged.update(log)
        if pbar:
            self.pbar.update(pbar)

    def reset(self) -> None:
        self.callback = {}
        self.logged = {}
        self.pbar = {}


class MetricSink:
    """Where ``self.log`` writes, and the one place logged values become logger calls, progress-bar values
    and ``callback_metrics``.

    One per run (a tuner trial has its own). It owns the run's view of logged metrics: the collection
    the running loop logs into (:meth:`collect_into`), the training epoch's values waiting for the
    epoch's logger flush, and the :class:`MetricStore` behind the Trainer's metric properties.

    Args:
        store: the metric dicts the Trainer's properties read (kept across runs).
        loggers: the loggers of the run (the Trainer's list, shared, so later assignments are seen).
        progress: the run's counters (the loggers' default x-axis and the ``epoch`` value).
        barebones: ``Trainer(barebones=True)``: ``self.log`` is an error.
        module: the run's module; a ``Metric`` logged must be one of its attributes (``None``: not checked).
    """

    def __init__(self, store: MetricStore, loggers: list[Any], progress: Progress, barebones: bool,
                 module: Any = None) -> None:
        self.store = store
        self.loggers = loggers
        self.progress = progress
        self.barebones = barebones
        self.module = module
        self.results: ResultCollection | None = None
        #: the training epoch's logger values, sent when the epoch closes (kept in checkpoints)
        self.epoch_log: dict[str, Any] = {}
        #: when loggers are saved (file loggers on a clock, see `flush_loggers`)
        self.saves = LoggerSaves()

    # ------------------------------------------------------------------ self.log
    def collect_into(self, results: ResultCollection | None) -> None:
        """Route ``self.log`` calls to ``results`` (``None``: no loop is running, logging is an error)."""
        if results is not None:
            results.module = self.module
        self.results = results

    def log(self, fx: str | None, name: str, value: Any, prog_bar: bool, logger: bool | None,
            on_step: bool | None, on_epoch: bool | None, reduce_fx: Any, enable_graph: bool, sync_dist: bool,
            sync_dist_group: Any, add_dataloader_idx: bool, batch_size: int | None, rank_zero_only: bool,
            stage: Any = None, metric_attribute: str | None = None) -> None:
        """Record one ``self.log`` call made from hook ``fx`` (see ``LightningModule.log``).

        ``stage`` (the run's entry point, or its loop) tells, when no loop collects, whether this is a
        prediction run, where nothing can be logged.

        Raises:
            MisconfigurationException: under ``barebones``, outside a running loop, or in a hook that
                cannot log.
        """
        if self.barebones:
            raise MisconfigurationException(
                "`self.log()` was called, but `Trainer(barebones=True)` is configured. Logging can be re-enabled"
                " by setting `Trainer(barebones=False)`"
            )
        results = self.results
        if results is None:
            raise_outside_loop(fx, name, predicting=stage is not None and stage.value == "predict")
        if logger and not self.loggers:
            _warning_cache.warn(
                f"You called `self.log({name!r}, ..., logger=True)` but have no logger configured. You can enable one"
                " by doing `Trainer(logger=ALogger(...))`. Remove `logger=True` to suppress this warning."
            )
        results.log(fx, name, value, prog_bar, logger, on_step, on_epoch, reduce_fx, enable_graph, sync_dist,
                    sync_dist_group, add_dataloader_idx, batch_size, rank_zero_only, metric_attribute)

    # ------------------------------------------------------------------ publishing
    def stage_train_step(self, results: ResultCollection) -> None:
        """A training batch's values, visible in ``callback_metrics``, ``progress_bar_metrics`` and
        ``logged_metrics`` from ``on_train_batch_end`` on (Lightning computes those properties from the
        running values); the loggers receive them in :meth:`publish_train_step`."""
        store = self.store
        # not consumed: `publish_train_step` hands them (with any logged in the hook) to the loggers, also when a
        # fit resumes from a checkpoint written in `on_train_batch_end`
        log = results.write_step_outputs(store.callback, store.pbar, consume=False)
        if log:
            store.logged.update(log)

    def publish_train_step(self, results: ResultCollection, log_every_n_steps: int) -> None:
        """A training step's values: to callbacks and the bar now (with what ``on_train_batch_end`` logged
        after :meth:`stage_train_step`), to the loggers every ``log_every_n_steps``."""
        store = self.store
        log = results.write_step_outputs(store.callback, store.pbar)
        if log:
            store.logged.update(log)
        p = self.progress
        if log and ((log_every_n_steps and (p.batches_that_stepped + 1) % log_every_n_steps == 0) or p.should_stop):
            self.send(log, step=p.batches_that_stepped)

    def publish_train_epoch(self, results: ResultCollection) -> None:
        """The training epoch's reductions: to callbacks and the bar now; kept for :meth:`flush_train_epoch`."""
        callback, log, pbar = results.epoch_outputs()
        self.store.update(callback, {}, pbar)
        self.epoch_log = log

    def flush_train_epoch(self) -> None:
        """Send the training epoch's values to the loggers (at the step of the epoch's last batch, as Lightning)."""
        log = self.epoch_log
        if log:
            self.store.update({}, log, {})
            self.send(log, step=max(self.progress.batches_that_stepped - 1, 0))
        self.saves.flush()

    def publish_eval_step(self, results: ResultCollection, step: int, sanity: bool) -> None:
        """An evaluation step's values; step-level evaluation metrics use the evaluation batch count as x-axis."""
        callback, log, pbar = results.step_outputs()
        if sanity:
            return
        self.store.update(callback, log, pbar)
        if log:
            self.send(log, step=step, add_epoch=False)

    def publish_eval_epoch(self, results: ResultCollection, sanity: bool) -> dict[str, Any] | None:
        """An evaluation's epoch reductions; returns what was logged (still tensors), ``None`` for a sanity
        check (its values reach no one)."""
        callback, log, pbar = results.epoch_outputs()
        if sanity:
            return None
        self.store.update(callback, log, pbar)
        if log:
            self.send(log)
        self.saves.flush()
        return log

    def send(self, metrics: Mapping[str, Any], step: int | None = None, add_epoch: bool = True) -> None:
        """Send ``metrics`` to every logger (converting to numbers: one device->host copy) at ``step``.

        Each logger is saved afterwards as :class:`~torchbolt.trainer.flush.LoggerSaves` decides (the
        built-in file loggers at most every few seconds, others every time). ``step`` defaults to the
        number of optimizer-stepping batches, the x-axis loggers share. With ``add_epoch`` (the
        Trainer's own x-axis, as for training metrics and evaluation epoch metrics), a value the user
        logged as ``"step"`` replaces that x-axis; otherwise ``"epoch"`` is added.
        """
        if not self.loggers or not metrics:
            return
        values = scalars(metrics)
        if add_epoch:
            user_step = values.pop("step", None)
            if user_step is not None:
                step = int(user_step)
            else:
                values.setdefault("epoch", self.progress.current_epoch)
        if step is None:
            step = self.progress.batches_that_stepped
        for logger in self.loggers:
            # by keyword, as Lightning calls it (loggers and tests may rely on the names)
            logger.log_metrics(metrics=values, step=step)
            self.saves.logged(logger)

    def save_loggers(self) -> None:
        """Save every logger now."""
        for logger in self.loggers:
            logger.save()
        self.saves.saved(self.loggers)

    def flush_loggers(self) -> None:
        """Save the loggers holding values they have not saved (before a checkpoint is written, say)."""
        self.saves.flush()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The stored metrics as host tensors (a device->host copy: checkpoint time only)."""
        return {"callback": _cpu(self.store.callback), "logged": _cpu(self.store.logged),
                "pbar": _cpu(self.store.pbar)}

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device) -> None:
        self.store.callback = _to_device(state.get("callback") or {}, device)
        self.store.logged = _to_device(state.get("logged") or {}, device)
        self.store.pbar = _to_device(state.get("pbar") or {}, device)


def raise_outside_loop(fx: str | None, name: str, predicting: bool) -> NoReturn:
    """The error for ``self.log`` when no loop collects logged values (the hook-specific one when there is one)."""
    if predicting or fx == "predict_step":
        raise MisconfigurationException(
            "You are trying to `self.log()` but the loop's result collection is not registered yet. This is"
            " most likely because you are trying to log in a `predict` hook, but it doesn't support logging"
        )
    _log_levels(fx, name, None, None)  # raises with the hook-specific message
    raise MisconfigurationException(f"`self.log({name!r}, ...)` was called from `{fx}`, outside of a running loop.")


def log_without_run(trainer: Any, fx: str | None, name: str, value: Any, prog_bar: bool, logger: bool | None,
                    on_step: bool | None, on_epoch: bool | None, reduce_fx: Any, batch_size: int | None) -> None:
    """``self.log`` on a module attached to a Trainer that has not run (``model.trainer = trainer``, a hook name
    and ``trainer.state.stage`` set by hand, as when a step method is unit-tested): the value is checked like
    any logged value and its epoch-level reduction (of this one value) goes to ``trainer.callback_metrics``.

    Raises:
        MisconfigurationException: when no hook name or no stage is set (nothing says what is being run),
            or for what ``self.log`` refuses in that hook.
    """
    fn, stage = trainer.state.fn, trainer.state.stage
    if any(x is not None and x.value == "predict" for x in (fn, stage)):
        raise_outside_loop(fx, name, predicting=True)
    if fx is not None:
        _log_levels(fx, name, on_step, on_epoch)  # a hook that cannot log says so (`configure_callbacks`, say)
    if fx is None or stage is None:
        raise MisconfigurationException(
            f"`self.log({name!r}, ...)` was called outside of a running loop: the module is attached to a Trainer"
            " that is not running it. Log from a hook while `trainer.fit/validate/test` runs."
        )
    results = ResultCollection(training=stage.value == "train", reduce_fn=lambda tensor, group, op: tensor,
                               device=trainer.strategy.root_device)
    results.log(fx, name, value, prog_bar, logger, on_step, on_epoch, reduce_fx, False, False, None, True,
                batch_size, False)
    callback, log, _ = results.epoch_outputs()
    # without a run, the Trainer's metric properties are its own store's dicts (no progress bar shows values)
    trainer.callback_metrics.update(callback)
    trainer.logged_metrics.update(log)


# `LightningModule.log` reaches `log_without_run` through its module (core does not import the trainer layer)
_core_module._log_without_run = log_without_run


def _cpu(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.detach().cpu() if isinstance(v, Tensor) else v for k, v in metrics.items()}


def _to_device(metrics: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in metrics.items()}


def scalars(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Convert tensors to Python numbers, as ``.item()`` would, with one device->host copy per device
    (a host sync; call only when flushing or displaying). See :func:`torchbolt.trainer.flush.to_numbers`."""
    return to_numbers(metrics)
