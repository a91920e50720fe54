"""Checkpoints from the Lightning.ai model registry: ``"registry:<model>[:version:<v>]"`` paths.

A registry path names a model (and optionally a version) stored on lightning.ai; ``litmodels`` (imported only
when a download happens) fetches it into ``<default_root_dir>/<model>[_<version>]``, from where its ``.ckpt``
file is loaded. The name handling below needs no network and no extra package.

Accepted spellings (the ``registry`` word and the ``version`` word in any case):

- ``"registry"``: the Trainer's default model, latest version;
- ``"registry:<model>"``: that model, latest version;
- ``"registry:<model>:version:<v>"``: that model at version ``<v>``;
- ``"registry:version:<v>"``: the Trainer's default model at version ``<v>``.
"""

from __future__ import annotations

import os
from typing import Any

from torchbolt.utilities.imports import module_available

_PREFIX = "registry"


def _is_registry(text: Any) -> bool:
    """Whether ``text`` is a registry path: exactly ``registry`` or ``registry:...`` (any case)."""
    if not isinstance(text, str):
        return False
    head, separator, _ = text.partition(":")
    return head.lower() == _PREFIX and (bool(separator) or text.lower() == _PREFIX)


def _parse_registry_model_version(ckpt_path: Any) -> tuple[str, str]:
    """Split a registry path into ``(model_name, version)``; each is ``""`` when the path leaves it out.

    Raises:
        ValueError: ``ckpt_path`` is not a registry path.
    """
    if not _is_registry(ckpt_path):
        raise ValueError(
            f"Invalid registry path: {ckpt_path!r}. Expected 'registry', 'registry:<model>',"
            " 'registry:<model>:version:<version>' or 'registry:version:<version>'."
        )
    parts = str(ckpt_path).split(":")[1:]
    model = ""
    version = ""
    if parts and parts[0].lower() != "version":
        model = parts[0]
        if len(parts) == 3 and parts[1].lower() == "version":
            version = parts[2]
    elif len(parts) == 2:  # "version", "<v>"
        version = parts[1]
    return model, version


def _determine_model_name(ckpt_path: Any, default_model_registry: str | None) -> str:
    """``"<model>"`` or ``"<model>:<version>"`` for a registry path; the model defaults to ``default_model_registry``.

    Raises:
        ValueError: the path names no model and there is no default.
    """
    model, version = _parse_registry_model_version(ckpt_path)
    model = model or (default_model_registry or "")
    if not model:
        raise ValueError(
            f"Invalid model registry: {ckpt_path!r} names no model and the Trainer has no default model."
            " Name it in the path ('registry:<model>') or pass `Trainer(model_registry=<model>)`."
        )
    return f"{model}:{version}" if version else model


def _determine_model_folder(model_name: str, default_root_dir: str) -> str:
    """The local folder a registry model is downloaded to: ``/`` and ``:`` in its name become ``_``."""
    if not model_name:
        raise ValueError("Invalid model registry: the model name is empty.")
    return os.path.join(default_root_dir, model_name.replace("/", "_").replace(":", "_"))


def find_model_local_ckpt_path(ckpt_path: Any, default_model_registry: str | None, default_root_dir: str) -> str:
    """The ``.ckpt`` file of a downloaded registry model (the first one, by name, in its local folder).

    Raises:
        ValueError: ``ckpt_path`` is not a valid registry path.
        RuntimeError: the model's folder has no ``.ckpt`` file (the download did not happen or failed).
    """
    model_name = _determine_model_name(ckpt_path, default_model_registry)
    folder = _determine_model_folder(model_name, default_root_dir)
    files = sorted(f for f in os.listdir(folder) if f.endswith(".ckpt")) if os.path.isdir(folder) else []
    if not files:
        raise RuntimeError(f"No `.ckpt` file in {folder!r}, where model {model_name!r} should have been downloaded.")
    return os.path.join(folder, files[0])


def download_model_from_registry(ckpt_path: Any, trainer: Any) -> None:
    """Download the model of a registry path into ``trainer.default_root_dir`` (local rank 0), then wait for all.

    Raises:
        ModuleNotFoundError: ``litmodels`` is not installed (``pip install litmodels``).
        RuntimeError: the registry returned no files.
    """
    if trainer.local_rank == 0:
        if not module_available("litmodels"):
            raise ModuleNotFoundError(
                "Loading a checkpoint from the model registry requires the `litmodels` package, which is not"
                " installed. Install it with `pip install litmodels`."
            )
        from litmodels import download_model

        model_name = _determine_model_name(ckpt_path, getattr(trainer, "model_registry", None))
        folder = _determine_model_folder(model_name, trainer.default_root_dir)
        if not download_model(model_name, download_dir=folder):
            raise RuntimeError(f"Downloading model {model_name!r} from the registry returned no files.")
    trainer.strategy.barrier("download_model_from_registry")
