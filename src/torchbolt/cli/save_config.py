"""``SaveConfigCallback``: write the run's full configuration next to its logs."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from torchbolt.callbacks.callback import Callback
from torchbolt.cli._jsonargparse import keep_nulls
from torchbolt.utilities.cloud_io import get_filesystem
from torchbolt.utilities.parsing import is_overridden

if TYPE_CHECKING:
    from torchbolt.cli.parser import LightningArgumentParser
    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer


class SaveConfigCallback(Callback):
    """Save the parsed ``LightningCLI`` configuration as ``config.yaml`` in the Trainer's ``log_dir``.

    The file holds every setting of the run (defaults included, the chosen seed too), so
    ``python main.py fit --config <log_dir>/config.yaml`` repeats it. It is written once, by the
    global-zero process, at the first ``setup``. An existing file is never overwritten unless
    ``overwrite=True``: a second run into the same directory fails before training instead of
    silently replacing the first run's record.

    Example::

        class LogConfig(SaveConfigCallback):
            def save_config(self, trainer, pl_module, stage):
                trainer.logger.log_hyperparams({"config": self.parser.dump(self.config)})

        LightningCLI(MyModel, save_config_callback=LogConfig)

    Args:
        parser: the parser that produced ``config``.
        config: the parsed configuration to save.
        config_filename: the file name inside ``log_dir``.
        overwrite: replace an existing file.
        multifile: when the input came from several config files, keep that structure.
        save_to_log_dir: write ``config_filename`` (``False`` only makes sense with a ``save_config`` override).

    Raises:
        ValueError: for ``save_to_log_dir=False`` without a ``save_config`` override.
        RuntimeError: at ``setup``, when the file exists and ``overwrite`` is ``False``.
    """

    def __init__(
        self,
        parser: LightningArgumentParser,
        config: Any,
        config_filename: str = "config.yaml",
        overwrite: bool = False,
        multifile: bool = False,
        save_to_log_dir: bool = True,
    ) -> None:
        self.parser = parser
        self.config = config
        self.config_filename = config_filename
        self.overwrite = overwrite
        self.multifile = multifile
        self.save_to_log_dir = save_to_log_dir
        self.already_saved = False
        if not save_to_log_dir and not is_overridden("save_config", self, SaveConfigCallback):
            raise ValueError(
                "`save_to_log_dir=False` only makes sense when subclassing SaveConfigCallback to implement"
                " `save_config` (saving the config elsewhere); otherwise nothing is saved. Keep"
                " `save_to_log_dir=True` or override `save_config`."
            )

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        if self.save_to_log_dir:
            self._write_to_log_dir(trainer)
        if trainer.is_global_zero:
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        # every rank agrees, so no rank writes again at a later setup
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def _write_to_log_dir(self, trainer: Trainer) -> None:
        log_dir = trainer.log_dir
        config_path = os.path.join(log_dir, self.config_filename)
        fs = get_filesystem(log_dir)
        if not self.overwrite:
            exists = fs.isfile(config_path) if trainer.is_global_zero else False
            # all ranks must raise together, or the others would hang in the next collective call
            if trainer.strategy.broadcast(exists):
                raise RuntimeError(
                    f"{type(self).__name__} expected {config_path} to NOT exist. Aborting to avoid overwriting the"
                    " record of a previous run. Delete that file, use another log directory,"
                    " pass `LightningCLI(save_config_callback=None)` to not save the config, or"
                    ' `LightningCLI(save_config_kwargs={"overwrite": True})` to overwrite it.'
                )
        if trainer.is_global_zero:
            # the logger usually creates log_dir, but it has not written anything yet
            fs.makedirs(log_dir, exist_ok=True)
            self.parser.save(
                self.config, config_path, overwrite=self.overwrite, multifile=self.multifile, **keep_nulls()
            )

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Override to save the config somewhere else too (runs on the global-zero process only).

        Example::

            def save_config(self, trainer, pl_module, stage):
                config = self.parser.dump(self.config)
                trainer.logger.log_hyperparams({"config": config})

        Collective calls here would hang the other processes: use ``setup`` for those.
        """
