"""``migrate_checkpoint`` and ``pl_legacy_patch``: see :mod:`torchbolt.utilities.migration`."""

from __future__ import annotations

import enum
import importlib
import pickle
import threading
from types import TracebackType
from typing import Any

from torchbolt.utilities.upgrade_checkpoint import _MIGRATIONS, UPGRADED_VERSION, _version

_LEGACY_VERSION_KEY = "legacy_pytorch-lightning_version"


def _as_text(version: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in (*version, 0, 0, 0)[:3])


def migrate_checkpoint(
    checkpoint: dict[str, Any], target_version: str | None = None
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Apply, in place, the layout migrations a checkpoint from an older Lightning version needs.

    Args:
        checkpoint: the loaded checkpoint dict (changed in place: no copy of possibly large state).
        target_version: apply only the migrations of versions up to this one (inclusive).

    Returns:
        The checkpoint, and for each version whose migrations ran, the names of those migrations
        (empty when the checkpoint was already current). After a migration the checkpoint records the
        version it was written with under ``"legacy_pytorch-lightning_version"``.
    """
    written = _version(checkpoint)
    limit = _version({"pytorch-lightning_version": target_version}) if target_version is not None else None
    applied: dict[str, list[str]] = {}
    for fixed_in, migrate in _MIGRATIONS:
        if written >= fixed_in or (limit is not None and fixed_in > limit):
            continue
        migrate(checkpoint)
        applied.setdefault(_as_text(fixed_in), []).append(migrate.__name__)
    if applied:
        checkpoint.setdefault(_LEGACY_VERSION_KEY, checkpoint.get("pytorch-lightning_version"))
        checkpoint["pytorch-lightning_version"] = UPGRADED_VERSION
    return checkpoint, applied


class _FaultTolerantMode(str, enum.Enum):
    """Stands in for the enum Lightning 2.0 removed, which 1.x checkpoints pickled."""

    DISABLED = "disabled"
    AUTOMATIC = "automatic"
    MANUAL = "manual"


def _gpus_arg_default(value: Any) -> Any:
    """Stands in for the argument parser helper that checkpoints before Lightning 1.2.8 pickled."""
    return value


# (module, name) references of old checkpoints that no longer exist anywhere
_REMOVED: dict[tuple[str, str], Any] = {
    ("pytorch_lightning.utilities.argparse_utils", "_gpus_arg_default"): _gpus_arg_default,
    ("pytorch_lightning.utilities.argparse", "_gpus_arg_default"): _gpus_arg_default,
    ("pytorch_lightning.utilities.enums", "_FaultTolerantMode"): _FaultTolerantMode,
}
_LIGHTNING_PACKAGES = ("pytorch_lightning", "lightning.pytorch")


class _LegacyUnpickler(pickle.Unpickler):
    """Resolves the removed references above, and Lightning module paths to torchbolt's where it has the name."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _REMOVED:
            return _REMOVED[(module, name)]
        for package in _LIGHTNING_PACKAGES:
            if module == package or module.startswith(package + "."):
                ours = "torchbolt" + module[len(package):]
                try:
                    return getattr(importlib.import_module(ours), name)
                except (ImportError, AttributeError):
                    break  # not mirrored: let pickle try the original path (and name it if it fails)
        return super().find_class(module, name)


_lock = threading.Lock()


class pl_legacy_patch:  # Lightning's (lower-case) name
    """Within the block, ``torch.load(..., weights_only=False)`` can unpickle old Lightning checkpoints.

    Old checkpoints pickled a few objects Lightning later removed (``_gpus_arg_default`` from before
    1.2.8, the ``_FaultTolerantMode`` enum of 1.x) and classes under ``pytorch_lightning`` paths. While
    the patch is active, ``pickle.Unpickler`` resolves the removed ones to stand-ins and Lightning paths
    to torchbolt's class of the same path and name when there is one. One block at a time (a lock);
    the previous unpickler is restored on exit, also after an error.

    Only use it on files you trust: a full unpickle can run code the file names.

    Example::

        with pl_legacy_patch():
            checkpoint = torch.load("old.ckpt", weights_only=False)
    """

    def __enter__(self) -> pl_legacy_patch:
        _lock.acquire()
        self._previous = pickle.Unpickler
        pickle.Unpickler = _LegacyUnpickler  # type: ignore[misc]
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        pickle.Unpickler = self._previous  # type: ignore[misc]
        _lock.release()


__all__ = ["migrate_checkpoint", "pl_legacy_patch"]
