"""Hyperparameter files and ``load_from_checkpoint``."""

from __future__ import annotations

import os
from argparse import Namespace
from enum import Enum
from pathlib import Path
from typing import IO, Any, Union

from torchbolt.utilities.cloud_io import _load, get_filesystem
from torchbolt.utilities.parsing import AttributeDict
from torchbolt.utilities.rank_zero import rank_zero_warn

_PATH = Union[str, Path]

CHECKPOINT_HYPER_PARAMS_KEY = "hyper_parameters"
CHECKPOINT_HYPER_PARAMS_NAME = "hparams_name"
CHECKPOINT_HYPER_PARAMS_TYPE = "hparams_type"


def _to_plain(value: Any) -> Any:
    """Hyperparameters as YAML/checkpoint-safe plain data (containers, numbers, strings, None)."""
    if isinstance(value, Namespace):
        value = vars(value)
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, Enum):
        return _to_plain(value.value)
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
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


def _load_from_checkpoint(
    cls: type,
    checkpoint_path: _PATH | IO[bytes],
    map_location: Any = None,
    hparams_file: _PATH | None = None,
    strict: bool | None = None,
    **kwargs: Any,
) -> Any:
    from torchbolt.core.datamodule import LightningDataModule
    from torchbolt.core.module import LightningModule

    checkpoint = _load(checkpoint_path, map_location=map_location or "cpu")
    if hparams_file is not None:
        checkpoint[CHECKPOINT_HYPER_PARAMS_KEY] = load_hparams_from_yaml(hparams_file)
    if issubclass(cls, LightningDataModule):
        hp_key = cls.CHECKPOINT_HYPER_PARAMS_KEY
    else:
        hp_key = CHECKPOINT_HYPER_PARAMS_KEY
    hparams = dict(checkpoint.get(hp_key) or {})
    hparams.update(kwargs)
    obj = cls(**hparams)
    if isinstance(obj, LightningDataModule):
        state = checkpoint.get(type(obj).__qualname__)
        if state:
            obj.load_state_dict(state)
        return obj
    assert isinstance(obj, LightningModule)
    obj.on_load_checkpoint(checkpoint)
    if strict is None:
        strict = obj.strict_loading
    obj.load_state_dict(checkpoint["state_dict"], strict=strict)
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        obj.to(map_location)
    return obj
