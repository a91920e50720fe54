"""CLI tests parse ``args=`` as if from the command line: keep pytest's own arguments out of ``sys.argv``."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    # LightningCLI warns when both `args=` and command-line arguments are present, as Lightning does
    monkeypatch.setattr(sys, "argv", ["main.py"])
