"""Callbacks, at the names and module paths Lightning users import them from."""

from torchbolt.callbacks.callback import Callback
from torchbolt.callbacks.checkpoint import Checkpoint
from torchbolt.callbacks.model_summary import ModelSummary
from torchbolt.callbacks.progress import ProgressBar, RichProgressBar, TQDMProgressBar
from torchbolt.callbacks.rich_model_summary import RichModelSummary
from torchbolt.callbacks.timer import Timer

__all__ = [
    "Callback",
    "Checkpoint",
    "ModelSummary",
    "ProgressBar",
    "RichModelSummary",
    "RichProgressBar",
    "TQDMProgressBar",
    "Timer",
]
