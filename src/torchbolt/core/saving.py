"""Hyperparameter files and ``load_from_checkpoint``.

Hyperparameters are stored as plain data (in checkpoints: containers, numbers, strings, tensors,
dtypes and devices; in ``hparams.yaml``: what ``yaml.safe_dump`` writes), so reading them back
never constructs arbitrary objects.
"""

from __future__ import annotations

import inspect
import os
from argparse import Namespace
from enum import Enum
from pathlib import Path
from typing import IO, Any, Union

import torch

from torchbolt.utilities.cloud_io import _load, get_filesystem
from torchbolt.utilities.parsing import AttributeDict
from torchbolt.utilities.rank_zero import WarningCache, rank_zero_warn

_PATH = Union[str, Path]
_warning_cache = WarningCache()

CHECKPOINT_HYPER_PARAMS_KEY = "hyper_parameters"
CHECKPOINT_HYPER_PARAMS_NAME = "hparams_name"
CHECKPOINT_HYPER_PARAMS_TYPE = "hparams_type"

_CHECKPOINT_SCALARS = (bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size)


def _to_plain(value: Any) -> Any:
    """Hyperparameters as YAML-safe plain data (containers, numbers, strings, None)."""
    if isinstance(value, Namespace):
        value = vars(value)
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_to_plain(v) for v in value]
    if isinstance(value, Enum):
        return _to_plain(value.value)
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return repr(value)


def _to_checkpoint_hparams(value: Any, key: str = "") -> Any:
    """Hyperparameters as data a weights-only ``torch.load`` reads back unchanged.

    Containers keep their type (a tuple stays a tuple); tensors, dtypes and devices are kept; an
    ``Enum`` becomes its value and a ``Path`` a string. Anything else (an ``nn.Module``, a custom
    object) is stored as its ``repr`` with a warning: pass it again to ``load_from_checkpoint``.
    """
    if isinstance(value, Namespace):
        value = vars(value)
    if isinstance(value, dict):
        return {k: _to_checkpoint_hparams(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        items = [_to_checkpoint_hparams(v, key) for v in value]
        return type(value)(items) if type(value) in (list, tuple, set) else items
    if isinstance(value, Enum):
        return _to_checkpoint_hparams(value.value, key)
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, _CHECKPOINT_SCALARS):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, torch.nn.Module):
        try:  # NumPy scalars
            return _to_checkpoint_hparams(value.item(), key)
        except (TypeError, ValueError):
            pass
    _warning_cache.warn(
        f"Hyperparameter {key!r} is a {type(value).__name__}, which a checkpoint stores only as its repr (loading"
        " never unpickles objects). Pass it again to `load_from_checkpoint(..., "
        f"{key.split('.')[0] or 'name'}=...)` or leave it out with `save_hyperparameters(ignore=[...])`."
    )
    return repr(value)


def save_hparams_to_yaml(config_yaml: _PATH, hparams: dict[str, Any] | Namespace, use_omegaconf: bool = True) -> None:
    """Write ``hparams`` to ``config_yaml`` (values that are not plain data are written as their repr)."""
    fs = get_filesystem(config_yaml)
    parent = os.path.dirname(str(config_yaml))
    if parent and not fs.isdir(parent):
        fs.makedirs(parent, exist_ok=True)
    data = _to_plain(hparams if not isinstance(hparams, AttributeDict) else dict(hparams))
    with fs.open(str(config_yaml), "w", newline="") as fp:
        import yaml  # imported on first use, to keep `import torchbolt` light

        yaml.safe_dump(data, fp, sort_keys=False)


# hyperparameter keys older checkpoints used, read when the current key is absent
CHECKPOINT_PAST_HPARAMS_KEYS = ("hparams", "module_arguments")


def convert(val: str) -> int | float | bool | str:
    """A tags-CSV cell as the value it spells: ``"true"``/``"false"`` (any case) as booleans, then an
    ``int``, then a ``float``, else the string unchanged."""
    if isinstance(val, str):
        if val.lower() == "true":
            return True
        if val.lower() == "false":
            return False
    for kind in (int, float):
        try:
            return kind(val)
        except (TypeError, ValueError):
            pass
    return val


def save_hparams_to_tags_csv(tags_csv: _PATH, hparams: dict[str, Any] | Namespace) -> None:
    """Write ``hparams`` as a two-column CSV (header ``key,value``), one row per hyperparameter.

    The older alternative to ``hparams.yaml``; values are written with ``str`` and read back by
    ``load_hparams_from_tags_csv`` through ``convert``. The target folder must exist.
    """
    import csv

    fs = get_filesystem(tags_csv)
    parent = os.path.dirname(str(tags_csv))
    if parent and not fs.isdir(parent):
        raise RuntimeError(f"Missing folder for `tags_csv`: {parent}; create it first.")
    if isinstance(hparams, Namespace):
        hparams = vars(hparams)
    with fs.open(str(tags_csv), "w", newline="") as fp:
        writer = csv.DictWriter(fp, fieldnames=["key", "value"])
        writer.writeheader()
        for key, value in hparams.items():
            writer.writerow({"key": key, "value": value})


def load_hparams_from_tags_csv(tags_csv: _PATH) -> dict[str, Any]:
    """Read a file written by ``save_hparams_to_tags_csv``; each value goes through ``convert``.

    A missing file gives a ``RuntimeWarning`` and an empty dict.
    """
    import csv

    fs = get_filesystem(tags_csv)
    if not fs.exists(str(tags_csv)):
        rank_zero_warn(f"Missing Tags: {tags_csv}.", category=RuntimeWarning)
        return {}
    with fs.open(str(tags_csv), "r", newline="") as fp:
        return {row["key"]: convert(row["value"]) for row in csv.DictReader(fp)}


def update_hparams(hparams: dict[str, Any], updates: dict[str, Any]) -> None:
    """Merge ``updates`` into ``hparams`` in place; nested dicts are merged key by key, not replaced."""
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(hparams.get(key), dict):
            update_hparams(hparams[key], value)
        else:
            hparams[key] = value


def load_hparams_from_yaml(config_yaml: _PATH, use_omegaconf: bool = True) -> dict[str, Any]:
    """Read hyperparameters with ``yaml.safe_load`` (never constructs arbitrary objects)."""
    fs = get_filesystem(config_yaml)
    if not fs.exists(str(config_yaml)):
        rank_zero_warn(f"Missing Tags: {config_yaml}.", category=RuntimeWarning)
        return {}
    with fs.open(str(config_yaml), "r") as fp:
        import yaml

        hparams = yaml.safe_load(fp)
    return hparams or {}


def _init_kwargs(cls: type, checkpoint: dict[str, Any], hp_key: str, name_key: str,
                 overrides: dict[str, Any]) -> dict[str, Any]:
    """The ``__init__`` arguments: saved hyperparameters updated with ``overrides``.

    When the hyperparameters were saved from a single argument (``save_hyperparameters(config)``
    inside ``__init__(self, config)``), they are passed back as that argument. Keys the
    constructor does not accept are dropped unless it takes ``**kwargs``.
    """
    saved = checkpoint.get(hp_key)
    if saved is None:  # a checkpoint from an old Lightning version keeps them under a past key
        saved = next((checkpoint[k] for k in CHECKPOINT_PAST_HPARAMS_KEYS if k in checkpoint), None)
    saved = saved or {}
    saved = dict(vars(saved) if isinstance(saved, Namespace) else saved)  # old Lightning files stored a Namespace
    params = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    receiver = next(iter(params), None)  # the instance argument, whatever it is called ("self", "obj"...)
    names = [n for n, p in params.items() if n != receiver and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in params.values())
    args_name = checkpoint.get(name_key)
    kwargs: dict[str, Any] = {args_name: saved} if args_name and args_name in names else saved
    kwargs.update(overrides)
    if not takes_kwargs:
        kwargs = {k: v for k, v in kwargs.items() if k in names}
    return kwargs


def _check_required_init_args(cls: type, init_kwargs: dict[str, Any], checkpoint_path: Any, hp_key: str) -> None:
    """Name the ``__init__`` arguments neither the checkpoint nor the caller supplies, and the fix."""
    params = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    receiver = next(iter(params), None)  # the instance argument, whatever it is called
    missing = [n for n, p in params.items() if n != receiver and p.default is p.empty
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in init_kwargs]
    if missing:
        example = ", ".join(f"{n}=..." for n in missing)
        raise TypeError(
            f"{cls.__name__}.__init__() needs {missing}, which the checkpoint {str(checkpoint_path)!r} does not"
            f" hold under {hp_key!r}. Pass them: `{cls.__name__}.load_from_checkpoint(path, {example})`, or call"
            " `self.save_hyperparameters()` in `__init__` so that future checkpoints store them."
        )


def _load_from_checkpoint(
    cls: type,
    checkpoint_path: _PATH | IO[bytes],
    map_location: Any = None,
    hparams_file: _PATH | None = None,
    strict: bool | None = None,
    weights_only: bool | None = None,
    **kwargs: Any,
) -> Any:
    from torchbolt.core.datamodule import LightningDataModule
    from torchbolt.core.module import LightningModule
    from torchbolt.utilities.checkpoint_checks import check_checkpoint_format

    checkpoint = _load(checkpoint_path, map_location=map_location or "cpu", weights_only=weights_only)
    check_checkpoint_format(checkpoint, checkpoint_path)
    hp_key = getattr(cls, "CHECKPOINT_HYPER_PARAMS_KEY", CHECKPOINT_HYPER_PARAMS_KEY)
    name_key = getattr(cls, "CHECKPOINT_HYPER_PARAMS_NAME", CHECKPOINT_HYPER_PARAMS_NAME)
    if hparams_file is not None:
        extension = str(hparams_file).rsplit(".", 1)[-1].lower()
        if extension not in ("yml", "yaml"):
            raise ValueError(f"`hparams_file={str(hparams_file)!r}`: pass a .yaml or .yml file.")
        checkpoint[hp_key] = load_hparams_from_yaml(hparams_file)
    init_kwargs = _init_kwargs(cls, checkpoint, hp_key, name_key, kwargs)
    _check_required_init_args(cls, init_kwargs, checkpoint_path, hp_key)
    obj = cls(**init_kwargs)
    if isinstance(obj, LightningDataModule):
        state = checkpoint.get(type(obj).__qualname__)
        if state:
            obj.load_state_dict(state)
        return obj
    assert isinstance(obj, LightningModule)
    _load_module_state(obj, cls, checkpoint, checkpoint_path, map_location, strict)
    return obj


def _load_module_state(obj: Any, cls: type, checkpoint: dict[str, Any], checkpoint_path: Any, map_location: Any,
                       strict: bool | None) -> None:
    """Load the checkpoint's ``state_dict`` into the new LightningModule ``obj`` (``configure_model`` first)."""
    from torchbolt.core.module import LightningModule

    if "state_dict" not in checkpoint:
        raise KeyError(
            f"{checkpoint_path!r} has no 'state_dict' entry, so it is not a Lightning/torchbolt checkpoint."
            " A plain state dict loads with `model.load_state_dict(torch.load(path, weights_only=True))`."
        )
    if obj._strict_loading is not None and strict is not None and strict != obj.strict_loading:
        raise ValueError(
            f"You set `.load_from_checkpoint(..., strict={strict!r})` which is in conflict with"
            f" `{cls.__name__}.strict_loading={obj.strict_loading!r}`. Set the same value for both, or leave"
            " `strict` unset to follow the model's `strict_loading`."
        )
    # layers created in `configure_model` must exist before the state dict is loaded into them
    from torchbolt.utilities.parsing import is_overridden

    if is_overridden("configure_model", obj, LightningModule):
        obj.configure_model()
    obj.on_load_checkpoint(checkpoint)
    if strict is None:
        strict = obj.strict_loading
    try:
        keys = obj.load_state_dict(checkpoint["state_dict"], strict=strict)
    except RuntimeError as e:
        raise RuntimeError(
            f"{e}\nThe checkpoint {str(checkpoint_path)!r} does not match {cls.__name__}. If the architecture"
            " changed on purpose, `load_from_checkpoint(..., strict=False)` loads the matching keys and skips"
            " missing/unexpected ones (tensors whose shapes differ still cannot be loaded)."
        ) from None
    if not checkpoint["state_dict"]:
        rank_zero_warn(f"The state dict in {str(checkpoint_path)!r} contains no parameters.")
    elif not strict and (keys.missing_keys or keys.unexpected_keys):
        rank_zero_warn(
            f"Loaded {checkpoint_path!r} with strict=False: missing keys {keys.missing_keys},"
            f" unexpected keys {keys.unexpected_keys}."
        )
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        obj.to(map_location)
