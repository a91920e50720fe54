"""``LightningCLI``: configure and run training from the command line and YAML files.

Needs the ``[cli]`` extra (``pip install 'torchbolt[cli]'``, i.e. ``jsonargparse``). Importing this
module works without it; building a parser or a ``LightningCLI`` then raises a ``ModuleNotFoundError``
that names the extra. ``import torchbolt`` never imports ``jsonargparse``.

Example::

    from torchbolt.cli import LightningCLI

    if __name__ == "__main__":
        LightningCLI(MyModel, MyDataModule)    # python main.py fit --config config.yaml
"""

from torchbolt.cli.lightning_cli import LightningCLI
from torchbolt.cli.parser import (
    ArgsType,
    LightningArgumentParser,
    LRSchedulerCallable,
    LRSchedulerType,
    LRSchedulerTypeTuple,
    LRSchedulerTypeUnion,
    OptimizerCallable,
    ReduceLROnPlateau,
    instantiate_class,
    instantiate_module,
)
from torchbolt.cli.save_config import SaveConfigCallback

__all__ = [
    "ArgsType",
    "LRSchedulerCallable",
    "LRSchedulerType",
    "LRSchedulerTypeTuple",
    "LRSchedulerTypeUnion",
    "LightningArgumentParser",
    "LightningCLI",
    "OptimizerCallable",
    "ReduceLROnPlateau",
    "SaveConfigCallback",
    "instantiate_class",
    "instantiate_module",
]
