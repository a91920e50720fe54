"""Checks on a loaded checkpoint dict: who wrote it, and whether its training state has the right shape.

Both run after ``torch.load`` and before anything is restored, so a bad entry is reported by name
(key and file) instead of surfacing as an ``AttributeError`` deep inside ``Optimizer.load_state_dict``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torchbolt
from torchbolt.utilities.exceptions import CorruptCheckpointError, MisconfigurationException
from torchbolt.utilities.rank_zero import WarningCache

_warning_cache = WarningCache()

#: the checkpoint format this torchbolt writes and reads up to (``torchbolt_format_version``)
CHECKPOINT_FORMAT_VERSION = 2
#: the Lightning version whose layout this follows (Lightning's own loaders read this key)
LIGHTNING_LAYOUT_VERSION = "2.6.0"


def _release(version: Any) -> tuple[int, ...] | None:
    """The leading numbers of a version string (``"2.6.1rc1"`` -> ``(2, 6, 1)``), or ``None`` if it has none."""
    if not isinstance(version, str):
        return None
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", version)
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


def warn_if_written_by_newer_version(checkpoint: Mapping[str, Any], name: Any, lightning_layout: str) -> None:
    """Warn (once per file and versions) when a newer torchbolt or Lightning wrote ``checkpoint``.

    Lightning versions are compared by release series (major.minor) against ``lightning_layout``, the
    layout this torchbolt follows: patch releases do not change the checkpoint layout. The
    ``torchbolt_version`` entry is compared in full with the running torchbolt. Incompatible format
    changes are refused separately (``torchbolt_format_version``); this only says that entries the
    newer version added may be ignored.
    """
    written = checkpoint.get("torchbolt_version")
    written_release, running_release = _release(written), _release(torchbolt.__version__)
    if written_release is not None and running_release is not None and written_release > running_release:
        _warning_cache.warn(
            f"The checkpoint {str(name)!r} was written by torchbolt {written}, newer than this torchbolt"
            f" ({torchbolt.__version__}). It loads, but entries that version added may be ignored: upgrade"
            " torchbolt to be sure everything is restored."
        )
        return
    lightning = checkpoint.get("pytorch-lightning_version")
    written_release, layout_release = _release(lightning), _release(lightning_layout)
    if written is None and written_release is not None and layout_release is not None \
            and written_release[:2] > layout_release[:2]:
        _warning_cache.warn(
            f"The checkpoint {str(name)!r} was written by PyTorch Lightning {lightning}, newer than the Lightning"
            f" {'.'.join(map(str, layout_release[:2]))}.x checkpoint layout this torchbolt"
            f" ({torchbolt.__version__}) reads. It loads, but entries that version added may be ignored."
        )


def check_training_state(checkpoint: Mapping[str, Any], name: Any) -> None:
    """Refuse training-state entries of the wrong type before any optimizer or scheduler is touched.

    ``optimizer_states`` and ``lr_schedulers`` must be lists (or tuples) with one state dict (or ``None``) each.

    Raises:
        CorruptCheckpointError: names the key, the file and what was found instead.
    """
    for key, item in (("optimizer_states", "optimizer"), ("lr_schedulers", "LR scheduler")):
        if key not in checkpoint:
            continue
        value = checkpoint[key]
        if not isinstance(value, (list, tuple)):
            raise CorruptCheckpointError(
                f"The checkpoint {str(name)!r} holds a {type(value).__name__} under {key!r}, but it must be a list"
                f" with one {item} state dict per {item}: the file was not written by Lightning or torchbolt,"
                " or was edited. Resume from an intact checkpoint, or load the weights with"
                " `Model.load_from_checkpoint(path)` and start a new fit."
            )
        for index, state in enumerate(value):
            # None: a placeholder of sharded strategies, whose states live in the shards
            if state is not None and not isinstance(state, Mapping):
                raise CorruptCheckpointError(
                    f"The checkpoint {str(name)!r} holds a {type(state).__name__} at {key}[{index}], but each entry"
                    f" must be the `state_dict()` of an {item}: the file was not written by Lightning or torchbolt,"
                    " or was edited."
                )


def check_checkpoint_format(checkpoint: Any, name: Any) -> None:
    """Refuse what is not a checkpoint dict, or one written in a newer torchbolt checkpoint format.

    A readable checkpoint written by a newer torchbolt or Lightning release loads with a warning.

    Raises:
        TypeError: ``checkpoint`` is not a dict.
        MisconfigurationException: its ``torchbolt_format_version`` is unknown to this torchbolt.
    """
    if not isinstance(checkpoint, dict):
        raise TypeError(f"{str(name)!r} holds a {type(checkpoint).__name__}, not a checkpoint dict.")
    version = checkpoint.get("torchbolt_format_version")
    if version is None or (isinstance(version, int) and not isinstance(version, bool)
                           and version <= CHECKPOINT_FORMAT_VERSION):
        warn_if_written_by_newer_version(checkpoint, name, LIGHTNING_LAYOUT_VERSION)
        return  # a Lightning checkpoint (no torchbolt format entry), or one this version can read
    raise MisconfigurationException(
        f"{str(name)!r} uses torchbolt checkpoint format {version!r}, but this torchbolt"
        f" ({torchbolt.__version__}) reads formats up to {CHECKPOINT_FORMAT_VERSION}. It was written by a newer"
        " torchbolt: upgrade torchbolt to load it. The file was not modified."
    )
