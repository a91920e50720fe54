"""The default progress display: a bar on a terminal, plain lines in a log, and no per-step host syncs."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import torchbolt as pl
from tests.helpers.models import ClassifierModule
from torchbolt.callbacks import Callback, RichProgressBar, TQDMProgressBar
from torchbolt.utilities.exceptions import MisconfigurationException

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits.py"
PLAIN_TRAIN_LINE = re.compile(r"^epoch (\d+)/(\d+) \| step (\d+)/(\d+) \| [0-9.]+ it/s \| \d+:\d\d:\d\d \| (.*)$")


@pytest.fixture(autouse=True)
def _no_forced_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test decides the mode itself; a TORCHBOLT_PROGRESS of the caller's shell must not leak in."""
    monkeypatch.delenv("TORCHBOLT_PROGRESS", raising=False)


class ShowsAcc(ClassifierModule):
    """Logs a tensor ``train_loss`` and a number ``acc`` to the bar, and ``val_acc`` in validation."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        self.log("acc", 0.75, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_acc", (self(x).argmax(dim=1) == y).float().mean(), prog_bar=True)


def _trainer(**kwargs: Any) -> pl.Trainer:
    defaults: dict[str, Any] = {"max_epochs": 2, "enable_checkpointing": False, "enable_model_summary": False,
                                "logger": False}
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


# ---------------------------------------------------------------------------- off a terminal
def test_off_a_terminal_the_default_bar_writes_one_plain_line_per_epoch(capsys: pytest.CaptureFixture[str]) -> None:
    trainer = _trainer()
    assert isinstance(trainer.progress_bar_callback, TQDMProgressBar)  # still the Lightning-compatible type
    trainer.fit(ShowsAcc())
    out = capsys.readouterr().out
    assert "\r" not in out
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2, out
    first, second = (PLAIN_TRAIN_LINE.match(line) for line in lines)
    assert first is not None and second is not None, lines
    assert first.group(1, 2, 3, 4) == ("1", "2", "8", "16") and second.group(1, 2, 3, 4) == ("2", "2", "16", "16")
    # the latest values, the validation metric of the same epoch included
    assert "acc=0.75" in second.group(5) and "train_loss=" in second.group(5) and "val_acc=" in second.group(5)
    assert trainer.progress_bar_callback.display_mode == "plain"
    # validation inside fit and the sanity check write no lines of their own
    assert "Validation" not in out and "Sanity" not in out


def test_plain_lines_come_every_plain_interval_within_an_epoch(capsys: pytest.CaptureFixture[str]) -> None:
    # an interval shorter than any step: a line after every batch but the last (the epoch's line follows it)
    bar = TQDMProgressBar(mode="auto", plain_interval=1e-9)
    _trainer(max_epochs=1, callbacks=[bar], limit_val_batches=0).fit(ShowsAcc())
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    steps = [int(PLAIN_TRAIN_LINE.match(line).group(3)) for line in lines]  # type: ignore[union-attr]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]


def test_a_fit_stopped_inside_an_epoch_still_reports_where_it_stopped(capsys: pytest.CaptureFixture[str]) -> None:
    _trainer(max_steps=3, limit_val_batches=0).fit(ShowsAcc())
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 1 and lines[0].startswith("epoch 1 | step 3/3 |"), lines


def test_stand_alone_validate_test_predict_write_one_summary_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    trainer = _trainer(max_epochs=1)
    model = ShowsAcc()
    trainer.fit(model)
    capsys.readouterr()
    trainer.validate(model, verbose=False)
    trainer.test(model, verbose=False)
    trainer.predict(model)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3, lines
    for line, name in zip(lines, ("Validation", "Testing", "Predicting")):
        assert re.fullmatch(rf"{name} \| 4/4 batches \| [0-9.]+ it/s \| 0:00:\d\d", line), line


def test_a_disabled_bar_writes_no_lines(capsys: pytest.CaptureFixture[str]) -> None:
    bar = TQDMProgressBar(mode="auto", plain_interval=1e-9)
    bar.disable()  # what `setup` does on every rank but global rank 0
    trainer = _trainer(max_epochs=1, callbacks=[bar])
    trainer.fit(ShowsAcc())
    trainer.test(ShowsAcc(), verbose=False)
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------------------- forcing a mode
def test_the_environment_variable_forces_the_bar_into_a_file(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TORCHBOLT_PROGRESS", "bar")
    trainer = _trainer(max_epochs=1)
    trainer.fit(ShowsAcc())
    out = capsys.readouterr().out
    assert trainer.progress_bar_callback.display_mode == "bar"
    assert "\r" in out and "Epoch 0" in out and "Sanity Checking" in out and "Validation" in out
    # the last redraw of the epoch shows the final count and the final metrics
    last_train_draw = [part for part in out.split("\r") if part.startswith("Epoch 0")][-1]
    assert "8/8" in last_train_draw and "acc=0.750" in last_train_draw and "val_acc=" in last_train_draw


def test_the_constructor_argument_wins_over_the_environment_variable(monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TORCHBOLT_PROGRESS", "bar")
    bar = TQDMProgressBar(mode="plain")
    _trainer(max_epochs=1, callbacks=[bar]).fit(ShowsAcc())
    out = capsys.readouterr().out
    assert bar.display_mode == "plain" and "\r" not in out and out.startswith("epoch 1/1 |")


def test_an_unknown_environment_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHBOLT_PROGRESS", "fancy")
    with pytest.raises(MisconfigurationException, match=r"TORCHBOLT_PROGRESS='fancy'.*'bar'.*'plain'"):
        _trainer(max_epochs=1).fit(ShowsAcc())


def test_a_bar_the_user_builds_without_a_mode_draws_a_bar_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    # Lightning code that passes its own TQDMProgressBar gets Lightning's bar, also in a log file
    bar = TQDMProgressBar(refresh_rate=1)
    trainer = _trainer(max_epochs=1, callbacks=[bar])
    trainer.fit(ShowsAcc())
    out = capsys.readouterr().out
    assert bar.mode is None and bar.display_mode == "bar"
    assert "\r" in out and "Epoch 0" in out and "Validation" in out and "epoch 1/1 |" not in out
    # the Trainer's own bar still detects the log file
    default = _trainer(max_epochs=1)
    default.fit(ShowsAcc())
    assert default.progress_bar_callback.mode == "auto" and default.progress_bar_callback.display_mode == "plain"
    assert "\r" not in capsys.readouterr().out


def test_the_environment_variable_also_chooses_for_a_bar_built_without_a_mode(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TORCHBOLT_PROGRESS", "plain")
    bar = TQDMProgressBar(refresh_rate=1)
    _trainer(max_epochs=1, callbacks=[bar]).fit(ShowsAcc())
    out = capsys.readouterr().out
    assert bar.display_mode == "plain" and "\r" not in out and out.startswith("epoch 1/1 |")
    monkeypatch.setenv("TORCHBOLT_PROGRESS", "auto")  # "auto" detects: a file gets plain lines
    bar = TQDMProgressBar()
    _trainer(max_epochs=1, callbacks=[bar]).fit(ShowsAcc())
    assert bar.display_mode == "plain" and "\r" not in capsys.readouterr().out


@pytest.mark.parametrize(("kwargs", "argument"), [
    ({"mode": "fancy"}, "mode"), ({"refresh_interval": 0}, "refresh_interval"),
    ({"plain_interval": -1.0}, "plain_interval"), ({"refresh_rate": -1}, "refresh_rate"),
    ({"refresh_rate": 1.5}, "refresh_rate"),
])
def test_bad_arguments_name_the_argument(kwargs: dict[str, Any], argument: str) -> None:
    with pytest.raises(MisconfigurationException, match=rf"TQDMProgressBar\({argument}="):
        TQDMProgressBar(**kwargs)


# ---------------------------------------------------------------------------- redraw budget and host syncs
class RecordingBar(TQDMProgressBar):
    """Records the training batch at which each metric read (a redraw or a plain line) happened."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads: list[int] = []
        self.shown: list[int] = []  # how many logged values each read returned

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        self.reads.append(CurrentBatch.index)
        metrics = super().get_metrics(trainer, pl_module)
        self.shown.append(len(metrics))
        return metrics


class CurrentBatch(Callback):
    """Makes the running training batch index visible to the counters below."""

    index = -1

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        CurrentBatch.index = batch_idx


@pytest.fixture
def host_syncs(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """Counts tensor-to-Python conversions made by torchbolt's code, keyed by the running training batch."""
    calls: Counter[int] = Counter()

    def wrap(name: str) -> None:
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if "/torchbolt/" in sys._getframe(1).f_code.co_filename.replace("\\", "/"):
                calls[CurrentBatch.index] += 1
            return original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)

    for name in ("item", "__float__", "tolist", "__int__", "__bool__", "__format__"):
        wrap(name)
    return calls


@pytest.mark.parametrize("mode", ["bar", "plain"])
def test_metrics_are_converted_only_by_the_redraws(mode: str, host_syncs: Counter[int],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # intervals far longer than the fit: only the redraws that always happen remain
    bar = RecordingBar(mode=mode, refresh_interval=3600, plain_interval=3600)
    trainer = _trainer(callbacks=[CurrentBatch(), bar], limit_val_batches=0)
    trainer.fit(ShowsAcc())
    assert trainer.global_step == 16
    # bar: the first batch, the last batch and the epoch's end; plain: the epoch's line
    expected_reads = [0, 7, 7, 0, 7, 7] if mode == "bar" else [7, 7]
    assert bar.reads == expected_reads
    # no conversion on a step that does not redraw ...
    assert set(host_syncs) == set(expected_reads), host_syncs
    # ... and each read converts every shown value once (all are device tensors here: `self.log` stages
    # numbers as tensors too), plus the step's loss that the bar adds: nothing else
    assert sum(host_syncs.values()) == sum(shown + 1 for shown in bar.shown), (host_syncs, bar.shown)
    assert max(bar.shown) == 2  # train_loss and acc


def test_an_explicit_refresh_rate_still_redraws_every_n_batches(capsys: pytest.CaptureFixture[str]) -> None:
    bar = RecordingBar(refresh_rate=4, mode="bar", refresh_interval=1e-9)  # the rate wins over the interval
    _trainer(max_epochs=1, callbacks=[CurrentBatch(), bar], limit_val_batches=0).fit(ShowsAcc())
    assert bar.reads == [3, 7, 7]  # batches 4 and 8, then the epoch's end


def test_the_default_bar_redraws_on_a_time_budget(capsys: pytest.CaptureFixture[str]) -> None:
    bar = RecordingBar(mode="bar")
    _trainer(max_epochs=1, callbacks=[CurrentBatch(), bar], limit_val_batches=0).fit(ShowsAcc())
    assert bar.refresh_rate == 1 and bar.refresh_interval == 0.2
    assert bar.reads[0] == 0 and bar.reads[-2:] == [7, 7]  # first and last batch, then the epoch's end


def test_the_rich_bar_reads_metrics_only_when_it_updates(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("rich", reason="RichProgressBar needs rich (installed by the all extra)")

    class RecordingRich(RichProgressBar):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.reads: list[int] = []

        def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
            self.reads.append(CurrentBatch.index)
            return super().get_metrics(trainer, pl_module)

    timed, every_fourth = RecordingRich(refresh_interval=3600), RecordingRich(refresh_rate=4)
    _trainer(max_epochs=1, callbacks=[CurrentBatch(), timed], limit_val_batches=0).fit(ShowsAcc())
    _trainer(max_epochs=1, callbacks=[CurrentBatch(), every_fourth], limit_val_batches=0).fit(ShowsAcc())
    assert timed.reads == [0, 7, 7]  # the first batch, the last one, the epoch's end
    assert every_fourth.reads == [3, 7, 7]
    with pytest.raises(MisconfigurationException, match="refresh_interval"):
        RichProgressBar(refresh_interval=-1)


# ---------------------------------------------------------------------------- a real script, file and terminal
def _digits_command(root: Path) -> list[str]:
    return [sys.executable, str(EXAMPLE), "--max-epochs", "2", "--root-dir", str(root)]


def _env(subprocess_env: dict[str, str], **extra: str) -> dict[str, str]:
    env = {**subprocess_env, "OMP_NUM_THREADS": "1", **extra}
    if "TORCHBOLT_PROGRESS" not in extra:
        env.pop("TORCHBOLT_PROGRESS", None)
    return env


def _run_in_a_terminal(command: list[str], env: dict[str, str], cwd: Path, timeout: float = 240) -> str:
    """Run ``command`` with stdout and stderr on a pseudo-terminal (120x40); return everything it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.ONLCR  # keep "\n" as written: every "\r" read back then comes from the program
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, cwd=cwd)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=30) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return b"".join(chunks).decode(errors="replace")


def test_digits_example_into_a_log_file_writes_a_few_plain_lines(tmp_path: Path,
                                                                 subprocess_env: dict[str, str]) -> None:
    pytest.importorskip("sklearn", reason="the example reads scikit-learn's bundled digits")
    log = tmp_path / "job.log"
    with log.open("w") as out:
        proc = subprocess.run(_digits_command(tmp_path), stdout=out, stderr=subprocess.STDOUT,
                              env=_env(subprocess_env), cwd=tmp_path, timeout=240)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "\r" not in text
    assert log.stat().st_size < 4096, text
    epochs = [PLAIN_TRAIN_LINE.match(line) for line in text.splitlines() if line.startswith("epoch ")]
    assert [m.group(1, 2) for m in epochs if m] == [("1", "2"), ("2", "2")], text
    assert all(m is not None and "val_acc=" in m.group(5) for m in epochs)
    assert re.search(r"^Testing \| 2/2 batches \|", text, re.M), text
    assert "test accuracy:" in text


def test_digits_example_on_a_terminal_redraws_the_bar_in_place(tmp_path: Path,
                                                               subprocess_env: dict[str, str]) -> None:
    pytest.importorskip("sklearn", reason="the example reads scikit-learn's bundled digits")
    text = _run_in_a_terminal(_digits_command(tmp_path), _env(subprocess_env), tmp_path)
    assert "\r" in text and "Epoch 1" in text and "Testing" in text, text[-3000:]
    assert not re.search(r"^epoch \d+/\d+ \|", text, re.M)  # no plain lines on a terminal
    assert "test accuracy:" in text


TINY_FIT = """
import torchbolt as pl
from tests.helpers.models import ClassifierModule
pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_model_summary=False).fit(ClassifierModule())
"""


def test_the_environment_variable_forces_plain_lines_on_a_terminal(tmp_path: Path,
                                                                    subprocess_env: dict[str, str]) -> None:
    repo = Path(__file__).resolve().parents[2]
    env = _env(subprocess_env, TORCHBOLT_PROGRESS="plain", PYTHONPATH=f"{subprocess_env['PYTHONPATH']}:{repo}")
    text = _run_in_a_terminal([sys.executable, "-c", TINY_FIT], env, tmp_path)
    assert "\r" not in text, text
    assert re.search(r"^epoch 1/1 \| step 8/8 \|", text, re.M), text
