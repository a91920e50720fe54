"""The ``Checkpoint`` marker base class for callbacks that save checkpoints."""

from __future__ import annotations

from torchbolt.callbacks.callback import Callback


class Checkpoint(Callback):
    """Base class of checkpoint-writing callbacks (``ModelCheckpoint``).

    The Trainer runs these after the other callbacks and, in ``on_train_epoch_end``, after the
    module, so they save the final state of everything else.
    """

    _monitors_epoch_end_metrics = True
