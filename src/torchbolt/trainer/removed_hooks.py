"""Refuse hooks that Lightning 2.x removed, so 1.x code fails loudly instead of being silently skipped.

A Lightning 1.x module with ``training_epoch_end(self, outputs)`` would otherwise train "fine" while its
epoch-end logic (often the metric a checkpoint monitors) never runs. Lightning 2.x raises for these
hooks at the start of the run; so do we, with the same exception types and the 2.x replacement named.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

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
                f"Support for `{hook}` has been removed in Lightning 2.0; `{type(model).__name__}` implements it."
                f" Use the `on_{hook.replace('training_', 'train_')}` hook instead.{_MIGRATION}"
            )
    for callback in callbacks:
        for hook, replacement in _CALLBACK_HOOKS.items():
            if callable(getattr(callback, hook, None)):
                raise RuntimeError(
                    f"The `Callback.{hook}` hook was removed in Lightning 1.8 (`{type(callback).__name__}`"
                    f" implements it). Use `Callback.{replacement}` instead."
                )
