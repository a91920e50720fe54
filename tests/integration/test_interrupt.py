"""Ctrl-C ends fit gracefully, then raises SystemExit(1); other exceptions reach the user unchanged after teardown."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.loggers import RecordingLogger
from tests.helpers.models import ClassifierModule, quiet_trainer
from tests.helpers.signals import with_default_signals
from torchbolt.callbacks import Callback

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_sigint_during_fit_ends_gracefully(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    # the child must react to SIGINT even when this run is a background job, which ignores SIGINT
    command = with_default_signals([sys.executable, str(SCRIPTS / "interruptible.py")])
    proc = subprocess.Popen(command, env=subprocess_env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    try:
        deadline = time.monotonic() + 120
        lines: list[str] = []
        for line in proc.stdout:
            lines.append(line)
            if "TRAINING" in line:
                break
            assert time.monotonic() < deadline
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # it trains forever: never leave it behind when the test fails
            proc.kill()
            proc.communicate()
    out = "".join(lines) + rest
    assert proc.returncode == 0, out
    assert "Detected KeyboardInterrupt" in out
    assert "CALLBACK_ON_EXCEPTION KeyboardInterrupt" in out
    assert "MODULE_ON_EXCEPTION KeyboardInterrupt" in out
    assert "TEARDOWN fit" in out
    assert "SYSTEM_EXIT 1" in out
    assert "AFTER_FIT interrupted=True status=interrupted" in out
    assert out.index("CALLBACK_ON_EXCEPTION") < out.index("MODULE_ON_EXCEPTION") < out.index("TEARDOWN")


class RaiseAt(Callback):
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if trainer.global_step == 3:
            raise self.exc


def test_keyboard_interrupt_in_process_shuts_down_then_exits_with_status_1() -> None:
    logger = RecordingLogger()
    seen: list[str] = []

    class Seen(Callback):
        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            seen.append(type(exception).__name__)

    handler = signal.getsignal(signal.SIGINT)
    trainer = quiet_trainer(callbacks=[RaiseAt(KeyboardInterrupt()), Seen()], logger=logger, max_epochs=5)
    with pytest.raises(SystemExit) as info:
        trainer.fit(ClassifierModule())
    assert info.value.code == 1 and isinstance(info.value.__cause__, KeyboardInterrupt)
    assert trainer.interrupted and trainer.global_step == 3
    assert seen == ["KeyboardInterrupt"] and logger.finalized == ["failed"]
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl-C works again after the shutdown


def test_other_exceptions_propagate_unchanged_after_teardown() -> None:
    error = ValueError("user bug")
    logger = RecordingLogger()
    torn_down: list[str] = []

    class Tear(ClassifierModule):
        def teardown(self, stage: str) -> None:
            torn_down.append(stage)

    trainer = quiet_trainer(callbacks=[RaiseAt(error)], logger=logger)
    with pytest.raises(ValueError) as info:
        trainer.fit(Tear())
    assert info.value is error
    assert torn_down == ["fit"] and logger.finalized == ["failed"]
    assert trainer.interrupted
