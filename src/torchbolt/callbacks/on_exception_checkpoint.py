"""``OnExceptionCheckpoint``: save a checkpoint when a run raises, so the work can be resumed."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from torchbolt.callbacks.checkpoint import Checkpoint
from torchbolt.utilities.states import TrainerStatus

if TYPE_CHECKING:
    from torchbolt.trainer.trainer import Trainer


class OnExceptionCheckpoint(Checkpoint):
    """Save ``<dirpath>/<filename>.ckpt`` when ``fit`` (or another run) raises, including on Ctrl-C.

    ``fit(ckpt_path="last")`` considers this file along with ``ModelCheckpoint``'s ``last`` files, and
    ``fit()`` without ``ckpt_path`` resumes from the newest of them when this callback is present.
    The file is deleted when a later run finishes without an exception.

    Args:
        dirpath: the directory (needed up front: an exception can happen before ``setup``).
        filename: the file name without extension.

    Raises:
        ValueError: an empty ``filename``.

    Example::

        trainer = Trainer(callbacks=[OnExceptionCheckpoint("checkpoints")])
    """

    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath: str | os.PathLike, filename: str = "on_exception") -> None:
        super().__init__()
        if not filename:
            raise ValueError("The filename cannot be empty")
        self.dirpath = dirpath
        self.filename = filename

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, self.filename + self.FILE_EXTENSION)

    def on_exception(self, trainer: Trainer, *_: Any, **__: Any) -> None:
        trainer.save_checkpoint(self.ckpt_path)

    def teardown(self, trainer: Trainer, *_: Any, **__: Any) -> None:
        # teardown also runs after an exception: keep the file that on_exception just wrote
        if trainer.state.status != TrainerStatus.INTERRUPTED:
            trainer.strategy.remove_checkpoint(self.ckpt_path)
