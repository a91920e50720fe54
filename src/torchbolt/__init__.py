"""torchbolt: PyTorch Lightning's API on a small, fast engine.

``import torchbolt as pl`` gives the names Lightning users expect.
"""

import logging as _logging
import os as _os

__version__ = "0.1.0"

# Like Lightning: show torchbolt's INFO messages (stop reasons, restored checkpoints) unless the
# application configured logging itself.
_logger = _logging.getLogger(__name__)
_logger.setLevel(_logging.INFO)
if not _logging.getLogger().hasHandlers():
    _logger.addHandler(_logging.StreamHandler())
    _logger.propagate = False

from torchbolt.callbacks.callback import Callback  # noqa: E402
from torchbolt.core.datamodule import LightningDataModule  # noqa: E402
from torchbolt.core.module import LightningModule  # noqa: E402
from torchbolt.trainer.trainer import Trainer  # noqa: E402
from torchbolt.utilities.seed import seed_everything  # noqa: E402

if _os.environ.get("POSSIBLE_USER_WARNINGS", "").strip().lower() in ("0", "off"):
    # Lightning's switch for the hints about likely mistakes (`PossibleUserWarning`)
    from torchbolt.utilities.warnings import disable_possible_user_warnings as _disable

    _disable()

__all__ = ["Callback", "LightningDataModule", "LightningModule", "Trainer", "__version__", "seed_everything"]

_LOGO = """
  +-------------+
  |  torchbolt  |
  +-------------+
"""


def cli_lightning_logo() -> None:
    """Print the project's ASCII-art banner to standard output (command-line tools call it at start-up)."""
    print(_LOGO)
