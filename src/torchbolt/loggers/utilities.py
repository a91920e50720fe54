"""Helpers shared by the loggers that upload checkpoints (MLflow, W&B)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

# the checkpoint callback's settings recorded beside each uploaded checkpoint
_CHECKPOINT_SETTINGS = ("monitor", "mode", "save_last", "save_top_k", "save_weights_only", "_every_n_train_steps",
                        "_every_n_val_epochs")


def _scan_checkpoints(checkpoint_callback: Any, logged_model_time: dict[str, float]) -> list[tuple[float, str, Any, str]]:
    """The checkpoints of ``checkpoint_callback`` not uploaded yet (or rewritten since), oldest first.

    Returns ``(mtime, path, score, tag)`` tuples; ``tag`` is ``"latest"``, ``"best"`` or ``"best_k"``.
    """
    found: dict[str, tuple[Any, str]] = {}
    last = getattr(checkpoint_callback, "last_model_path", "")
    if last and hasattr(checkpoint_callback, "current_score"):
        found[last] = (checkpoint_callback.current_score, "latest")
    best = getattr(checkpoint_callback, "best_model_path", "")
    if best and hasattr(checkpoint_callback, "best_model_score"):
        found[best] = (checkpoint_callback.best_model_score, "best")
    for path, score in (getattr(checkpoint_callback, "best_k_models", None) or {}).items():
        found[path] = (score, "best_k")
    rows = sorted(
        (Path(p).stat().st_mtime, p, score, tag) for p, (score, tag) in found.items() if Path(p).is_file()
    )
    return [row for row in rows if row[1] not in logged_model_time or logged_model_time[row[1]] < row[0]]


def _checkpoint_metadata(checkpoint_callback: Any, path: str, score: Any, section: str) -> dict[str, Any]:
    """What is recorded beside an uploaded checkpoint: its score, file name and the callback's settings."""
    return {
        "score": score.item() if isinstance(score, Tensor) else score,
        "original_filename": Path(path).name,
        section: {k: getattr(checkpoint_callback, k) for k in _CHECKPOINT_SETTINGS if hasattr(checkpoint_callback, k)},
    }


def _checkpoint_aliases(checkpoint_callback: Any, path: str) -> list[str]:
    return ["latest", "best"] if path == getattr(checkpoint_callback, "best_model_path", None) else ["latest"]


def _version(loggers: list[Any], separator: str = "_") -> int | str | None:
    """The version shown for ``loggers``: the only logger's, or the distinct versions joined in order."""
    if len(loggers) == 1:
        version: int | str | None = loggers[0].version
        return version
    return separator.join(dict.fromkeys(str(logger.version) for logger in loggers))
