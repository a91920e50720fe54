"""A user's ``main.py`` built on LightningCLI, run as a real subprocess by tests/cli/test_cli_script.py."""

from __future__ import annotations

from tests.helpers.cli_models import CLIDataModule, CLIModel
from torchbolt.cli import LightningCLI


class ReportingCLI(LightningCLI):
    def after_fit(self) -> None:
        # one machine-checkable line for the test
        print(f"RESULT global_step={self.trainer.global_step} lr={self.model.hparams.lr} "
              f"batch_size={self.datamodule.batch_size} max_epochs={self.trainer.max_epochs}")


if __name__ == "__main__":
    ReportingCLI(CLIModel, CLIDataModule, subclass_mode_model=True)
