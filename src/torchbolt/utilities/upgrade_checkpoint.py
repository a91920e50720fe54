"""Rewrite checkpoints written by old PyTorch Lightning versions (0.x, 1.x) to the current layout.

Each migration applies to checkpoints older than the version that changed the layout; the file's
``pytorch-lightning_version`` says which apply. The original file is kept as ``<file>.bak``.

Usage::

    python -m torchbolt.utilities.upgrade_checkpoint path/to/model.ckpt
    python -m torchbolt.utilities.upgrade_checkpoint path/to/checkpoints/ --extension .ckpt --map-to-cpu

Old checkpoints are full pickles (not only tensors), so this command unpickles them: run it only on
files you trust.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

# the layout the migrations produce (loops after Lightning 2.0's restructuring)
UPGRADED_VERSION = "2.0.0"

# Lightning 1.x fit-loop keys -> 2.0 (the batch loop, optimizer loop and dataloader loops were folded away)
_FIT_LOOP_RENAMES = {
    "epoch_loop.batch_loop.state_dict": None,
    "epoch_loop.batch_loop.optimizer_loop.state_dict": "epoch_loop.automatic_optimization.state_dict",
    "epoch_loop.batch_loop.optimizer_loop.optim_progress": "epoch_loop.automatic_optimization.optim_progress",
    "epoch_loop.batch_loop.manual_loop.state_dict": "epoch_loop.manual_optimization.state_dict",
    "epoch_loop.batch_loop.manual_loop.optim_step_progress": "epoch_loop.manual_optimization.optim_step_progress",
    "epoch_loop.optimizer_loop.state_dict": "epoch_loop.automatic_optimization.state_dict",
    "epoch_loop.optimizer_loop.optim_progress": "epoch_loop.automatic_optimization.optim_progress",
    "epoch_loop.manual_loop.state_dict": "epoch_loop.manual_optimization.state_dict",
    "epoch_loop.manual_loop.optim_step_progress": "epoch_loop.manual_optimization.optim_step_progress",
    "epoch_loop.val_loop.dataloader_progress": None,
    "epoch_loop.val_loop.epoch_loop.state_dict": None,
    "epoch_loop.val_loop.epoch_loop.batch_progress": "epoch_loop.val_loop.batch_progress",
}
_EVAL_LOOP_RENAMES = {
    "dataloader_progress": None,
    "epoch_loop.state_dict": None,
    "epoch_loop.batch_progress": "batch_progress",
}


def _version(checkpoint: dict[str, Any]) -> tuple[int, ...]:
    """The Lightning version that wrote ``checkpoint`` (``(0,)`` when it does not say)."""
    text = str(checkpoint.get("pytorch-lightning_version") or "0")
    parts: list[int] = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or (0,)


def _callbacks(checkpoint: dict[str, Any]) -> dict[Any, Any]:
    return checkpoint.setdefault("callbacks", {})


def _legacy_key(class_name: str) -> str:
    """The key torchbolt's loader accepts for a callback saved without its own state key."""
    from torchbolt.callbacks import EarlyStopping, ModelCheckpoint

    return str({"ModelCheckpoint": ModelCheckpoint, "EarlyStopping": EarlyStopping}[class_name])


def _migrate_top_level_callback_state(checkpoint: dict[str, Any]) -> None:
    """Lightning < 0.10 kept ModelCheckpoint and EarlyStopping state as top-level keys."""
    best_score = checkpoint.pop("checkpoint_callback_best_model_score", None)
    best_score = checkpoint.pop("checkpoint_callback_best", best_score)
    best_path = checkpoint.pop("checkpoint_callback_best_model_path", None)
    if best_score is not None or best_path is not None:
        state = _callbacks(checkpoint).setdefault(_legacy_key("ModelCheckpoint"), {})
        if best_score is not None:
            state["best_model_score"] = best_score
        if best_path is not None:
            state["best_model_path"] = best_path
    wait = checkpoint.pop("early_stop_callback_wait", None)
    patience = checkpoint.pop("early_stop_callback_patience", None)
    if wait is not None or patience is not None:
        state = _callbacks(checkpoint).setdefault(_legacy_key("EarlyStopping"), {})
        if wait is not None:
            state["wait_count"] = wait
        if patience is not None:
            state["patience"] = patience


def _migrate_hparams_key(checkpoint: dict[str, Any]) -> None:
    """Before ``hyper_parameters``, the module's init arguments were saved as ``hparams`` / ``module_arguments``."""
    for old in ("hparams", "module_arguments"):
        if old in checkpoint and "hyper_parameters" not in checkpoint:
            checkpoint["hyper_parameters"] = checkpoint.pop(old)


def _migrate_counters_to_progress(checkpoint: dict[str, Any]) -> None:
    """Lightning < 1.6 saved only ``epoch`` and ``global_step``; later versions read progress from ``loops``."""
    if "loops" in checkpoint or "global_step" not in checkpoint:
        return
    step, epoch = int(checkpoint["global_step"]), int(checkpoint.get("epoch", 0))

    def entry(value: int, keys: tuple[str, ...]) -> dict[str, dict[str, int]]:
        return {"total": dict.fromkeys(keys, value), "current": dict.fromkeys(keys, value)}

    checkpoint["loops"] = {"fit_loop": {
        "state_dict": {},
        "epoch_loop.state_dict": {"_batches_that_stepped": step},
        "epoch_progress": entry(epoch, ("ready", "started", "processed", "completed")),
        "epoch_loop.automatic_optimization.optim_progress": {
            "optimizer": {"step": entry(step, ("ready", "completed")),
                          "zero_grad": entry(step, ("ready", "started", "completed"))}},
    }}


def _rename_keys(state: dict[str, Any], renames: dict[str, str | None]) -> None:
    for old, new in renames.items():
        if old in state:
            value = state.pop(old)
            if new is not None:
                state.setdefault(new, value)


def _migrate_loop_structure(checkpoint: dict[str, Any]) -> None:
    """Lightning 2.0 removed the batch, optimizer and dataloader loops: their entries moved or went away."""
    loops = checkpoint.get("loops")
    if not isinstance(loops, dict):
        return
    if isinstance(loops.get("fit_loop"), dict):
        _rename_keys(loops["fit_loop"], _FIT_LOOP_RENAMES)
    for name in ("validate_loop", "test_loop", "predict_loop"):
        if isinstance(loops.get(name), dict):
            _rename_keys(loops[name], _EVAL_LOOP_RENAMES)


# (first version that no longer needs it, migration), oldest first
_MIGRATIONS: list[tuple[tuple[int, ...], Callable[[dict[str, Any]], None]]] = [
    ((0, 10), _migrate_top_level_callback_state),
    ((0, 10), _migrate_hparams_key),
    ((1, 6), _migrate_counters_to_progress),
    ((2, 0), _migrate_loop_structure),
]


def upgrade_checkpoint(checkpoint: dict[str, Any]) -> bool:
    """Apply, in place, every migration older than the version that wrote ``checkpoint``.

    Returns:
        Whether anything was migrated (the version is then set to ``UPGRADED_VERSION``).
    """
    written = _version(checkpoint)
    applied = False
    for fixed_in, migrate in _MIGRATIONS:
        if written < fixed_in:
            migrate(checkpoint)
            applied = True
    if applied:
        checkpoint["pytorch-lightning_version"] = UPGRADED_VERSION
    return applied


def _files(path: Path, extension: str) -> list[Path]:
    """The checkpoint files ``path`` names: itself, or every ``*<extension>`` file below it.

    Raises:
        FileNotFoundError: ``path`` does not exist, or a folder holds no such file.
    """
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"The path {path} does not exist: pass a checkpoint file or a folder of them.")
    found = sorted(p for p in path.rglob(f"*{extension}") if p.is_file())
    if not found:
        raise FileNotFoundError(
            f"No checkpoint files with extension {extension} were found in {path}. Pass `--extension` if your"
            " checkpoints end differently."
        )
    return found


def _upgrade_file(path: Path, map_to_cpu: bool) -> bool:
    checkpoint = torch.load(path, map_location="cpu" if map_to_cpu else None, weights_only=False)
    if not isinstance(checkpoint, dict) or not upgrade_checkpoint(checkpoint):
        return False
    backup = path.with_name(path.name + ".bak")
    shutil.copyfile(path, backup)
    partial = path.with_name(path.name + ".partial")
    torch.save(checkpoint, partial)
    os.replace(partial, path)  # the upgraded file appears complete or not at all
    return True


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns 0, or exits with status 2 (``SystemExit``) when the path does not exist
    or holds no checkpoint, after logging the reason as an error."""
    parser = argparse.ArgumentParser(
        prog="python -m torchbolt.utilities.upgrade_checkpoint",
        description="Upgrade checkpoints written by old PyTorch Lightning versions to the current layout;"
                    " each original is kept as <file>.bak.",
    )
    parser.add_argument("path", type=Path, help="a checkpoint file, or a folder searched recursively")
    parser.add_argument("--extension", "-e", default=".ckpt", help="file ending searched in a folder (default .ckpt)")
    parser.add_argument("--map-to-cpu", action="store_true",
                        help="load GPU tensors onto the CPU (for a machine without the GPUs that saved them)")
    args = parser.parse_args(argv)
    extension = args.extension if args.extension.startswith(".") else "." + args.extension
    try:
        files = _files(args.path, extension)
    except FileNotFoundError as err:
        log.error(str(err))
        raise SystemExit(2) from None
    for file in files:
        upgraded = _upgrade_file(file, args.map_to_cpu)
        print(f"{file}: {'upgraded (original kept as ' + file.name + '.bak)' if upgraded else 'already current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
