"""Lightning's module of model checks, at its path: the two checks Lightning code calls directly.

The Trainer itself checks a model in ``trainer/setup.py`` (``verify_model``) before any hook runs.
"""

from __future__ import annotations

from typing import Any

from torchbolt.trainer.legacy import check_removed_hooks

_FN_BY_STAGE = {"val": "validate", "validate": "validate", "test": "test", "predict": "predict"}


def __verify_train_val_loop_configuration(trainer: Any, model: Any) -> None:
    """Raise ``NotImplementedError`` when ``model`` implements ``training_epoch_end`` or
    ``validation_epoch_end`` (removed in Lightning 2.0; ``on_train_epoch_end`` replaces them)."""
    check_removed_hooks(model, (), "fit")


def __verify_eval_loop_configuration(model: Any, stage: str) -> None:
    """Raise ``NotImplementedError`` when ``model`` implements the removed epoch-end hook of ``stage``
    (``"val"``, ``"test"`` or ``"predict"``)."""
    check_removed_hooks(model, (), _FN_BY_STAGE[stage])
