"""The Trainer and its loops."""

from torchbolt.trainer.trainer import Trainer
from torchbolt.utilities.seed import seed_everything

__all__ = ["Trainer", "seed_everything"]
