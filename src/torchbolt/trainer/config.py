"""Validation of every Trainer argument, at construction, with errors that name the fix.

``resolve_config`` turns the raw arguments into a :class:`TrainerConfig` whose fields have their
final types (``fast_dev_run`` and the 1.x spellings already applied), so nothing downstream
re-checks them.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, cast

from torchbolt.callbacks.timer import _parse_duration
from torchbolt.trainer.states import GradClipAlgorithm
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import (
    PossibleUserWarning,
    rank_zero_deprecation,
    rank_zero_info,
    rank_zero_warn,
)

_PRECISION_ALIASES: dict[str, str] = {
    "64": "64-true", "64-true": "64-true",
    "32": "32-true", "32-true": "32-true",
    "16": "16-mixed", "16-mixed": "16-mixed", "16-true": "16-true",
    "bf16": "bf16-mixed", "bf16-mixed": "bf16-mixed", "bf16-true": "bf16-true",
    "transformer-engine": "transformer-engine", "transformer-engine-float16": "transformer-engine-float16",
    "nf4": "nf4", "nf4-dq": "nf4-dq", "fp4": "fp4", "fp4-dq": "fp4-dq", "int8": "int8",
    "int8-training": "int8-training",
}

@dataclass
class TrainerConfig:
    """The validated, normalized Trainer arguments (read-only by convention after construction)."""

    fast_dev_run: int
    #: ``None`` until the first ``fit`` resolves it (see :func:`resolve_fit_max_epochs`), as in Lightning
    max_epochs: int | None
    min_epochs: int | None
    max_steps: int
    min_steps: int | None
    max_time: timedelta | None
    limit_train_batches: int | float
    limit_val_batches: int | float
    limit_test_batches: int | float
    limit_predict_batches: int | float
    overfit_batches: int | float
    #: batches (int), a fraction of the epoch (float) or wall-clock time between validations (timedelta)
    val_check_interval: int | float | timedelta
    check_val_every_n_epoch: int | None
    num_sanity_val_steps: int | float
    log_every_n_steps: int
    enable_checkpointing: bool
    enable_progress_bar: bool
    enable_model_summary: bool
    accumulate_grad_batches: int
    gradient_clip_val: float | None
    gradient_clip_algorithm: GradClipAlgorithm | None
    deterministic: bool | Literal["warn"] | None
    benchmark: bool | None
    inference_mode: bool
    use_distributed_sampler: bool
    detect_anomaly: bool
    barebones: bool
    sync_batchnorm: bool
    reload_dataloaders_every_n_epochs: int
    default_root_dir: str
    precision: str | None
    auto_lr_find: bool | str
    auto_scale_batch_size: bool | str


class _ArgumentTypeError(MisconfigurationException, TypeError):
    """A Trainer argument of the wrong type: a ``TypeError`` that older ``except MisconfigurationException`` catch."""


class _ArgumentValueError(MisconfigurationException, ValueError):
    """A Trainer argument that cannot be combined with another: a ``ValueError``, and a ``MisconfigurationException``."""


def _fail(arg: str, value: Any, expected: str) -> MisconfigurationException:
    return MisconfigurationException(f"`Trainer({arg}={value!r})` is invalid: {expected}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Lightning's wording for some of these errors, kept after ours because code matches on it
_LIGHTNING_INT_WORDING = {
    "max_epochs": "`max_epochs` must be a non-negative integer or -1",
    "max_steps": "`max_steps` must be a non-negative integer or -1",
    "check_val_every_n_epoch": "`check_val_every_n_epoch` should be an integer",
    "reload_dataloaders_every_n_epochs": "`reload_dataloaders_every_n_epochs` should be an int >= 0",
}


def _check_int(arg: str, value: Any, minimum: int, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if not _is_int(value) or value < minimum:
        extra = " or None" if allow_none else ""
        also = f" ({_LIGHTNING_INT_WORDING[arg]})" if arg in _LIGHTNING_INT_WORDING else ""
        raise _fail(arg, value, f"expected an int >= {minimum}{extra}{also}")
    return int(value)


def _check_bool(arg: str, value: Any, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _fail(arg, value, "expected True or False")
    return value


def _check_limit(arg: str, value: Any, default: int | float = 1.0) -> int | float:
    """An int is a number of batches, a float in [0, 1] a fraction of them.

    A float above 1.0 with no fractional part (``3.0``, ``1e50``) counts as that many batches, as in
    Lightning; any other float outside [0, 1] is an error.
    """
    if value is None:
        return default
    if _is_int(value):
        if value < 0:
            raise _fail(arg, value, "an int is a number of batches and must be >= 0")
        return int(value)
    if isinstance(value, float):
        if value > 1.0 and value != float("inf") and value.is_integer():
            return int(value)
        if not 0.0 <= value <= 1.0:
            raise _fail(
                arg, value,
                "a float is a fraction of the batches and must be in [0.0, 1.0]; pass an int for a number of batches"
                f" (you have passed invalid value {value} for {arg})",
            )
        return value
    raise _fail(arg, value, "expected an int (number of batches) or a float in [0.0, 1.0] (fraction)")


def _announce_one(arg: str, value: Any) -> None:
    """``1`` and ``1.0`` look alike but mean one batch and all batches: say which one was understood."""
    if value is None or isinstance(value, bool) or value != 1:
        return
    if _is_int(value):
        meaning = {"limit_train_batches": "1 batch per epoch will be used.",
                   "val_check_interval": "validation will run after every batch."}.get(arg, "1 batch will be used.")
        rank_zero_info(f"`Trainer({arg}=1)` was configured so {meaning}")
    elif isinstance(value, float):
        meaning = {"limit_train_batches": "100% of the batches per epoch will be used",
                   "val_check_interval": "validation will run at the end of the training epoch"}.get(
                       arg, "100% of the batches will be used")
        rank_zero_info(f"`Trainer({arg}=1.0)` was configured so {meaning}.")


_TIME_FORMS = "a 'DD:HH:MM:SS' string, a datetime.timedelta or a dict of timedelta arguments such as {'minutes': 30}"


def _val_check_time(value: str | timedelta | dict[str, Any]) -> timedelta:
    """A time-based ``val_check_interval`` as a positive ``timedelta``."""
    if isinstance(value, timedelta):
        interval = value
    elif isinstance(value, dict):
        try:
            interval = timedelta(**value)
        except TypeError as e:
            raise _fail("val_check_interval", value, f"a dict must hold timedelta arguments ({e})") from e
    else:
        parts = value.strip().split(":")
        if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
            raise _fail("val_check_interval", value,
                        f"a string must be 'DD:HH:MM:SS' with integer fields, e.g. '00:00:30:00' for 30 minutes"
                        f" (Invalid time format for `val_check_interval`: {value!r}. Expected 'DD:HH:MM:SS'.)")
        days, hours, minutes, seconds = (int(p) for p in parts)
        interval = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if interval.total_seconds() <= 0:
        raise _fail("val_check_interval", value, "a time interval must be longer than zero")
    return interval


def _check_val_check_interval(value: Any, check_val_every_n_epoch: int | None) -> int | float | timedelta:
    """Batches (int), a fraction of the epoch (float) or a wall-clock interval (str/timedelta/dict)."""
    if value is None:
        return 1.0
    if isinstance(value, (str, timedelta, dict)):
        return _val_check_time(value)
    if isinstance(value, float) and check_val_every_n_epoch is None:
        # a fraction of an epoch means nothing when validation is not tied to epochs
        raise MisconfigurationException(
            f"`Trainer(val_check_interval={value!r}, check_val_every_n_epoch=None)` is invalid: without epochs"
            " to take a fraction of, pass an int (every N training batches) or a time interval. (`val_check_interval`"
            " should be an integer or a time-based duration (str 'DD:HH:MM:SS', datetime.timedelta, or dict kwargs"
            " for timedelta) when `check_val_every_n_epoch=None`.)"
        )
    if _is_int(value):
        if value <= 0:
            raise _fail("val_check_interval", value, "an int is a number of training batches and must be >= 1")
        return int(value)
    if isinstance(value, float):
        if not 0.0 < value <= 1.0:
            raise _fail("val_check_interval", value,
                        "a float is a fraction of the training epoch and must be in (0.0, 1.0] (you have passed"
                        f" invalid value {value} for val_check_interval)")
        return value
    raise _fail("val_check_interval", value,
                f"expected an int (batches), a float in (0.0, 1.0] (fraction of an epoch) or {_TIME_FORMS}")


def normalize_precision(precision: Any) -> str | None:
    """Map every accepted spelling to its canonical ``"<bits>-<mode>"`` string.

    Raises:
        MisconfigurationException: for unknown values, listing the valid ones.
    """
    if precision is None:
        return None
    key = str(precision)
    if key not in _PRECISION_ALIASES:
        valid = sorted({v for v in _PRECISION_ALIASES.values()})
        raise MisconfigurationException(
            f"`Trainer(precision={precision!r})` is not supported. Choose one of {valid}"
            " (the ints 64, 32 and 16 and the string 'bf16' are accepted as aliases)."
        )
    canonical = _PRECISION_ALIASES[key]
    if key in ("16", "bf16"):
        rank_zero_deprecation(
            f"`Trainer(precision={precision!r})` is a Lightning 1.x spelling, supported for historical reasons;"
            f" use `precision={canonical!r}` instead."
        )
    return canonical


# Lightning 1.x arguments that 2.x removed without a Trainer-argument replacement: they stay a TypeError
# (as in Lightning 2.x), but the message says what replaced them.
KNOWN_ARGS = [
    "accelerator", "strategy", "devices", "num_nodes", "precision", "logger", "callbacks", "fast_dev_run",
    "max_epochs", "min_epochs", "max_steps", "min_steps", "max_time", "limit_train_batches",
    "limit_val_batches", "limit_test_batches", "limit_predict_batches", "overfit_batches", "val_check_interval",
    "check_val_every_n_epoch", "num_sanity_val_steps", "log_every_n_steps", "enable_checkpointing",
    "enable_progress_bar", "enable_model_summary", "accumulate_grad_batches", "gradient_clip_val",
    "gradient_clip_algorithm", "deterministic", "benchmark", "inference_mode", "use_distributed_sampler",
    "profiler", "detect_anomaly", "barebones", "plugins", "sync_batchnorm", "reload_dataloaders_every_n_epochs",
    "default_root_dir", "enable_autolog_hparams",
]


def _check_fast_dev_run(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if not _is_int(value) or value < 0:
        raise _fail("fast_dev_run", value, "expected a bool or an int >= 0 (number of batches); it should be >= 0")
    return int(value)


def _resolve_max_epochs(value: Any) -> int | None:
    """``max_epochs`` as given: ``None`` (not set) stays ``None`` until a fit resolves it."""
    return _check_int("max_epochs", value, -1, allow_none=True)


def default_max_epochs(config: TrainerConfig, has_timer: bool = False) -> int:
    """The epoch limit a fit uses when ``max_epochs`` was not set: -1 (none) when another limit ends the fit
    (``max_steps``, ``max_time`` or a ``Timer`` callback), else 1000."""
    if config.max_steps != -1 or config.max_time is not None or has_timer:
        return -1
    return 1000


def resolve_fit_max_epochs(config: TrainerConfig, has_timer: bool) -> None:
    """At the start of a fit, give an unset ``max_epochs`` its value (kept afterwards, as in Lightning), with a
    warning when that value is the 1000-epoch default."""
    if config.max_epochs is not None:
        return
    config.max_epochs = default_max_epochs(config, has_timer)
    if config.max_epochs == 1000:
        rank_zero_warn(
            "`max_epochs` was not set. Setting it to 1000 epochs. To train without an epoch limit,"
            " set `max_epochs=-1`.",
            category=PossibleUserWarning,
        )


def _check_num_sanity_val_steps(value: Any) -> int | float:
    if value is None:
        return 2
    if not _is_int(value) or value < -1:
        raise _fail("num_sanity_val_steps", value, "expected an int >= 0, or -1 to check all batches")
    return float("inf") if value == -1 else int(value)


def _check_clipping(clip_val: Any, clip_algo: Any) -> tuple[float | None, GradClipAlgorithm | None]:
    if clip_val is not None and (isinstance(clip_val, bool) or not isinstance(clip_val, (int, float))):
        # a wrong type is a TypeError (as in Lightning), still catchable as MisconfigurationException
        raise _ArgumentTypeError(
            f"`Trainer(gradient_clip_val={clip_val!r})` is invalid: expected a non-negative number or None"
            f" (`gradient_clip_val` should be an int or a float, got {type(clip_val).__name__})."
        )
    if clip_val is not None and clip_val < 0:
        raise _fail("gradient_clip_val", clip_val, "expected a non-negative number or None")
    if clip_algo is not None:
        if not isinstance(clip_algo, str) or clip_algo.lower() not in ("norm", "value"):
            raise _fail("gradient_clip_algorithm", clip_algo,
                        f"expected 'norm' or 'value' (`gradient_clip_algorithm` {clip_algo} is invalid)")
        clip_algo = cast(GradClipAlgorithm, clip_algo.lower())
    return (None if clip_val is None else float(clip_val)), clip_algo


def _check_determinism(deterministic: Any, benchmark: Any) -> None:
    if deterministic not in (None, True, False, "warn"):
        raise _fail("deterministic", deterministic, "expected None, True, False or 'warn'")
    if benchmark is not None and not isinstance(benchmark, bool):
        raise _fail("benchmark", benchmark, "expected None, True or False")
    if benchmark and deterministic:
        rank_zero_warn(
            "You passed `deterministic=True` and `benchmark=True`. Note that PyTorch ignores"
            " torch.backends.cudnn.deterministic=True when torch.backends.cudnn.benchmark=True.",
        )


def _check_default_root_dir(value: Any) -> str:
    if value is None:
        return os.getcwd()
    if not isinstance(value, (str, os.PathLike)):
        raise _fail("default_root_dir", value, "expected a path (str or os.PathLike)")
    path = os.fspath(value)
    # `~` is expanded for local paths only: a URL (`s3://...`) is kept as given
    return path if "://" in path else os.path.expanduser(path)


def resolve_config(args: dict[str, Any], legacy: dict[str, Any]) -> TrainerConfig:
    """Validate and normalize the Trainer's arguments (see ``Trainer.__init__`` for their meaning)."""
    fast_dev_run = _check_fast_dev_run(args["fast_dev_run"])
    max_steps = _check_int("max_steps", args["max_steps"], -1)
    assert max_steps is not None
    max_time = _parse_duration(args["max_time"])
    max_epochs = _resolve_max_epochs(args["max_epochs"])
    min_epochs = _check_int("min_epochs", args["min_epochs"], 0, allow_none=True)
    min_steps = _check_int("min_steps", args["min_steps"], 0, allow_none=True)
    if min_epochs is not None and max_epochs not in (None, -1) and min_epochs > max_epochs:
        raise _fail("min_epochs", min_epochs, f"it exceeds `max_epochs={max_epochs}`")

    limits = {
        name: _check_limit(name, args[name])
        for name in ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches")
    }
    overfit_batches = _check_limit("overfit_batches", args["overfit_batches"], default=0.0)
    for name in ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches",
                 "overfit_batches", "val_check_interval"):
        _announce_one(name, args[name])
    check_val_every_n_epoch = _check_int("check_val_every_n_epoch", args["check_val_every_n_epoch"], 1,
                                         allow_none=True)
    val_check_interval = _check_val_check_interval(args["val_check_interval"], check_val_every_n_epoch)
    num_sanity = _check_num_sanity_val_steps(args["num_sanity_val_steps"])
    log_every_n_steps = _check_int("log_every_n_steps", 50 if args["log_every_n_steps"] is None
                                   else args["log_every_n_steps"], 0)
    accumulate = _check_int("accumulate_grad_batches", args["accumulate_grad_batches"], 1)
    clip_val, clip_algo = _check_clipping(args["gradient_clip_val"], args["gradient_clip_algorithm"])
    deterministic, benchmark = args["deterministic"], args["benchmark"]
    _check_determinism(deterministic, benchmark)
    reload_every = _check_int("reload_dataloaders_every_n_epochs", args["reload_dataloaders_every_n_epochs"], 0)
    default_root_dir = _check_default_root_dir(args["default_root_dir"])

    barebones = _check_bool("barebones", args["barebones"], False)
    enable_checkpointing = _check_bool("enable_checkpointing", args["enable_checkpointing"], not barebones)
    enable_progress_bar = _check_bool("enable_progress_bar", args["enable_progress_bar"], not barebones)
    enable_model_summary = _check_bool("enable_model_summary", args["enable_model_summary"], not barebones)
    if barebones:
        _check_barebones(args, enable_checkpointing, enable_progress_bar, enable_model_summary)
        # off, as Lightning reports them: `trainer.log_every_n_steps` and `num_sanity_val_steps` read 0
        log_every_n_steps, num_sanity = 0, 0

    config = TrainerConfig(
        fast_dev_run=fast_dev_run,
        max_epochs=max_epochs,
        min_epochs=min_epochs,
        max_steps=max_steps,
        min_steps=min_steps,
        max_time=max_time,
        overfit_batches=overfit_batches,
        val_check_interval=val_check_interval,
        check_val_every_n_epoch=check_val_every_n_epoch,
        num_sanity_val_steps=num_sanity,
        log_every_n_steps=log_every_n_steps,  # type: ignore[arg-type]
        enable_checkpointing=enable_checkpointing,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=enable_model_summary,
        accumulate_grad_batches=accumulate,  # type: ignore[arg-type]
        gradient_clip_val=clip_val,
        gradient_clip_algorithm=clip_algo,
        deterministic=deterministic,
        benchmark=benchmark,
        inference_mode=_check_bool("inference_mode", args["inference_mode"], True),
        use_distributed_sampler=_check_bool("use_distributed_sampler", args["use_distributed_sampler"], True),
        detect_anomaly=_check_bool("detect_anomaly", args["detect_anomaly"], False),
        barebones=barebones,
        sync_batchnorm=_check_bool("sync_batchnorm", args["sync_batchnorm"], False),
        reload_dataloaders_every_n_epochs=reload_every,  # type: ignore[arg-type]
        default_root_dir=default_root_dir,
        precision=normalize_precision(args["precision"]),
        auto_lr_find=legacy.get("auto_lr_find", False),
        auto_scale_batch_size=legacy.get("auto_scale_batch_size", False),
        **limits,
    )
    _apply_overfit_and_fast_dev_run(config)
    return config


def _check_barebones(args: dict[str, Any], checkpointing: bool, progress_bar: bool, summary: bool) -> None:
    """Refuse every argument that turns a per-step feature back on under ``barebones=True``.

    Raises:
        ValueError: (a ``MisconfigurationException`` too) naming the argument.
    """
    def forbid(arg: str, value: Any) -> None:
        raise _ArgumentValueError(
            f"`Trainer(barebones=True)` turns off every feature with per-step cost; `Trainer({arg}={value!r})` was"
            f" passed too. Remove `{arg}` or set `barebones=False`."
        )

    if checkpointing:
        forbid("enable_checkpointing", True)
    if progress_bar:
        forbid("enable_progress_bar", True)
    if summary:
        forbid("enable_model_summary", True)
    if args["logger"] not in (None, False):
        forbid("logger", args["logger"])
    if args["log_every_n_steps"] not in (None, 0):
        forbid("log_every_n_steps", args["log_every_n_steps"])
    if args["num_sanity_val_steps"] not in (None, 0):
        forbid("num_sanity_val_steps", args["num_sanity_val_steps"])
    if args["fast_dev_run"] not in (False, 0):
        forbid("fast_dev_run", args["fast_dev_run"])
    if args["profiler"] is not None:
        forbid("profiler", args["profiler"])
    if args["detect_anomaly"]:
        forbid("detect_anomaly", True)
    rank_zero_info(
        "You are running in `Trainer(barebones=True)` mode: logging (`self.log`), checkpointing, the progress bar,"
        " the model summary, sanity checking, `fast_dev_run`, anomaly detection and profiling are off, so the"
        " Trainer adds as little as possible to each step."
    )


def _apply_overfit_and_fast_dev_run(config: TrainerConfig) -> None:
    if config.fast_dev_run:
        n = config.fast_dev_run
        config.limit_train_batches = n
        config.limit_val_batches = n
        config.limit_test_batches = n
        config.limit_predict_batches = n
        config.num_sanity_val_steps = 0
        config.max_epochs = 1
        config.max_steps = n
        config.val_check_interval = 1.0
        config.check_val_every_n_epoch = 1
        rank_zero_info(
            f"Running in `fast_dev_run` mode: will run the requested loop using {n} batch(es)."
            " Logging and checkpointing is suppressed."
        )
    elif config.overfit_batches > 0:
        config.limit_train_batches = config.overfit_batches
        config.limit_val_batches = config.overfit_batches


def env_defaults(explicit: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Apply ``PL_TRAINER_<ARG>`` environment variables to arguments left at their defaults.

    As in Lightning, an argument passed explicitly always wins; the value is read as a Python
    literal when it is one (``PL_TRAINER_MAX_EPOCHS=3``) and as a string otherwise
    (``PL_TRAINER_ACCELERATOR=cpu``).
    """
    result = dict(explicit)
    for name in KNOWN_ARGS:
        raw = os.environ.get(f"PL_TRAINER_{name.upper()}")
        if raw is None or name not in defaults or explicit.get(name) is not defaults[name]:
            continue
        try:
            result[name] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            result[name] = raw
    return result
