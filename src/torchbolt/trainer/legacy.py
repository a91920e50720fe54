"""Every Lightning 1.x spelling in one place: arguments mapped to their 2.x equivalents (with a deprecation
warning), arguments and hooks that 2.x removed (a clear error naming the replacement).

Refusing removed hooks matters: a Lightning 1.x module with ``training_epoch_end(self, outputs)`` would
otherwise train "fine" while its epoch-end logic (often the metric a checkpoint monitors) never runs.
Lightning 2.x raises for these hooks at the start of the run; so do we, with the same exception types and
the 2.x replacement named.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from torchbolt.utilities.rank_zero import rank_zero_deprecation

_LEGACY_SPELLINGS = {
    "gpus": "accelerator='gpu', devices=N",
    "tpu_cores": "accelerator='tpu', devices=N",
    "distributed_backend": "strategy=...",
    "auto_lr_find": "Tuner(trainer).lr_find(model)",
    "auto_scale_batch_size": "Tuner(trainer).scale_batch_size(model)",
    "replace_sampler_ddp": "use_distributed_sampler=...",
    "resume_from_checkpoint": "trainer.fit(model, ckpt_path=...)",
    "checkpoint_callback": "enable_checkpointing=...",
    "progress_bar_refresh_rate": "callbacks=[TQDMProgressBar(refresh_rate=N)]",
    "weights_summary": "enable_model_summary=... or callbacks=[ModelSummary(max_depth=N)]",
    "flush_logs_every_n_steps": "the logger's own flush argument (e.g. CSVLogger(flush_logs_every_n_steps=N))",
    "amp_backend": "precision='16-mixed'",
    "terminate_on_nan": "detect_anomaly=True or EarlyStopping(check_finite=True)",
}


_REMOVED_ARGS = {
    "auto_select_gpus": "use `devices='auto'` (or a list of device ids) instead",
    "track_grad_norm": "log `torchbolt.utilities.grad_norm(self, norm_type=2)` in `on_before_optimizer_step` instead",
    "stochastic_weight_avg": "use `callbacks=[StochasticWeightAveraging(swa_lrs=...)]` instead",
    "num_processes": "use `accelerator='cpu', devices=N` instead",
    "ipus": "IPUs are not supported and the argument has no replacement",
    "move_metrics_to_cpu": "remove it: logged values stay on the device and are read when loggers flush",
    "prepare_data_per_node": "set the `prepare_data_per_node` attribute of your LightningModule/DataModule instead",
    "reload_dataloaders_every_epoch": "use `reload_dataloaders_every_n_epochs=1` instead",
    "multiple_trainloader_mode": "use `CombinedLoader(loaders, mode=...)` from `torchbolt.utilities` instead",
    "log_gpu_memory": "use `callbacks=[DeviceStatsMonitor()]` instead",
    "process_position": "use `callbacks=[TQDMProgressBar(process_position=N)]` instead",
    "truncated_bptt_steps": "split the sequence yourself in `training_step` (manual optimization) instead",
}


def check_legacy_arguments(kwargs: dict[str, Any], known: list[str]) -> dict[str, Any]:
    """Translate Lightning 1.x arguments to the 2.x ones (with a deprecation warning each).

    Raises:
        TypeError: for an unknown argument, naming the replacement of a removed 1.x argument or the
            closest known spelling.
    """
    modern: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in _REMOVED_ARGS:
            raise TypeError(
                f"Trainer.__init__() got an unexpected keyword argument {key!r}: `Trainer({key}=...)` was removed"
                f" in Lightning 2.0; {_REMOVED_ARGS[key]}."
            )
        if key not in _LEGACY_SPELLINGS:
            candidates = difflib.get_close_matches(key, known + list(_LEGACY_SPELLINGS), n=1)
            hint = f" Did you mean `{candidates[0]}`?" if candidates else ""
            raise TypeError(f"Trainer.__init__() got an unexpected keyword argument {key!r}.{hint}")
        rank_zero_deprecation(
            f"`Trainer({key}={value!r})` is a Lightning 1.x argument; use `{_LEGACY_SPELLINGS[key]}` instead."
        )
        modern[key] = value
    return modern


def apply_legacy_progress_bar(args: dict[str, Any], refresh_rate: Any) -> dict[str, Any]:
    """Map 1.x ``progress_bar_refresh_rate``: 0 hides the bar, N adds ``TQDMProgressBar(refresh_rate=N)``.

    A progress bar already in ``args["callbacks"]`` wins, and an explicit ``enable_progress_bar=False`` too.

    Returns:
        ``args`` with ``enable_progress_bar`` / ``callbacks`` updated.
    """
    if not refresh_rate:
        args["enable_progress_bar"] = False
        return args
    if args.get("enable_progress_bar") is False:
        return args
    from torchbolt.callbacks.progress import ProgressBar, TQDMProgressBar

    callbacks = args.get("callbacks")
    items = [] if callbacks is None else list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
    if not any(isinstance(cb, ProgressBar) for cb in items):
        items.append(TQDMProgressBar(refresh_rate=int(refresh_rate)))
    args["callbacks"] = items
    return args


def apply_legacy(args: dict[str, Any], legacy: dict[str, Any]) -> dict[str, Any]:
    """Map the Lightning 1.x arguments that have a 2.x equivalent onto ``args`` (warned about already)."""
    if "checkpoint_callback" in legacy:
        args["enable_checkpointing"] = bool(legacy["checkpoint_callback"])
    if "replace_sampler_ddp" in legacy:
        args["use_distributed_sampler"] = bool(legacy["replace_sampler_ddp"])
    if "weights_summary" in legacy:
        args["enable_model_summary"] = legacy["weights_summary"] is not None
    if "progress_bar_refresh_rate" in legacy:
        args = apply_legacy_progress_bar(args, legacy["progress_bar_refresh_rate"])
    return args


def apply_legacy_device_args(accelerator: Any, devices: Any, strategy: Any, legacy: dict[str, Any],
                             accelerator_names: tuple[str, ...]) -> tuple[Any, Any, Any]:
    """``gpus=``, ``tpu_cores=``, ``distributed_backend=`` and a strategy name in ``accelerator=`` (1.x)."""
    # in Lightning 1.x, `gpus=0`/`gpus=None` meant "train on the CPU"
    if legacy.get("gpus") not in (None, 0, "0", [], False):
        accelerator, devices = "gpu", legacy["gpus"]
    if legacy.get("tpu_cores") not in (None, 0, [], False):
        accelerator, devices = "tpu", legacy["tpu_cores"]
    if legacy.get("distributed_backend") is not None:
        strategy = legacy["distributed_backend"]
    # Lightning 1.x accepted the strategy in `accelerator`, e.g. Trainer(accelerator="ddp")
    if isinstance(accelerator, str) and accelerator not in accelerator_names and _is_strategy_name(accelerator):
        rank_zero_deprecation(
            f"`Trainer(accelerator={accelerator!r})` is a Lightning 1.x spelling; use `strategy={accelerator!r}`"
            " and `accelerator='gpu'` or `'cpu'`."
        )
        strategy, accelerator = accelerator, "auto"
    return accelerator, devices, strategy


def _is_strategy_name(name: str) -> bool:
    from torchbolt.strategies.registry import StrategyRegistry, import_strategy_modules

    import_strategy_modules()
    return name in StrategyRegistry


_MIGRATION = (
    " To access outputs, save them in-memory as instance attributes (e.g. append in the step and clear"
    " in the epoch-end hook)."
)

_MODULE_HOOKS_BY_FN = {
    "fit": ("training_epoch_end", "validation_epoch_end"),
    "validate": ("validation_epoch_end",),
    "test": ("test_epoch_end",),
    "predict": (),
}

_CALLBACK_HOOKS = {
    "on_batch_start": "on_train_batch_start",
    "on_batch_end": "on_train_batch_end",
    "on_epoch_start": "on_<train/validation/test>_epoch_start",
    "on_epoch_end": "on_<train/validation/test>_epoch_end",
    "on_pretrain_routine_start": "on_fit_start",
    "on_pretrain_routine_end": "on_fit_start",
}


def check_removed_hooks(model: Any, callbacks: Iterable[Any], fn: str) -> None:
    """Raise if ``model`` or a callback implements a hook that Lightning 2.0 removed.

    Args:
        model: the LightningModule about to run.
        callbacks: the Trainer's callbacks.
        fn: the entry point: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.

    Raises:
        NotImplementedError: ``model`` implements ``training_epoch_end`` / ``validation_epoch_end`` /
            ``test_epoch_end`` (checked for the stages ``fn`` runs); use ``on_<stage>_epoch_end``.
        RuntimeError: a callback implements a hook removed in Lightning 1.8 (``on_epoch_start``,
            ``on_batch_end``, ``on_pretrain_routine_start``, ...).

    Example:
        >>> check_removed_hooks(object(), [], "fit")  # nothing removed: returns None
    """
    for hook in _MODULE_HOOKS_BY_FN.get(fn, ()):
        if callable(getattr(model, hook, None)):
            raise NotImplementedError(
                f"Support for `{hook}` has been removed in v2.0.0 of Lightning; `{type(model).__name__}` implements it."
                f" Use the `on_{hook.replace('training_', 'train_')}` hook instead.{_MIGRATION}"
            )
    for callback in callbacks:
        for hook, replacement in _CALLBACK_HOOKS.items():
            if callable(getattr(callback, hook, None)):
                raise RuntimeError(
                    f"The `Callback.{hook}` hook was removed in Lightning 1.8 (`{type(callback).__name__}`"
                    f" implements it). Use `Callback.{replacement}` instead."
                )
