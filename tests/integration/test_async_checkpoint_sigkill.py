"""Processes killed with SIGKILL while ``AsyncCheckpointIO`` writes in the background: every file left
loads and holds one consistent snapshot, the last completed checkpoint survives, and a fit resumed
after the kills ends bit-identical to an uninterrupted one.

``_async_kill_launcher.py`` imports torch once, forks each writing process and kills it at a random
moment (CPU, fp32, ``deterministic=True`` for the fits).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

LAUNCHER = Path(__file__).with_name("_async_kill_launcher.py")

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the launcher forks one process per run")


def _launch(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(LAUNCHER), *args], env=env, capture_output=True, text=True,
                          timeout=280)
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and results, f"launcher failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return json.loads(results[-1].removeprefix("RESULT "))


def _env() -> dict[str, str]:
    """The environment of the launcher: this checkout's ``src`` first on the path."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@pytest.fixture(scope="module")
def plugin_kills(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Five processes saving 24 MB checkpoints in a loop, each SIGKILLed after 0.2-1.2 s."""
    return _launch(["plugin", str(tmp_path_factory.mktemp("plugin-kills")), "--kills", "5", "--seed", "0"], _env())


@pytest.fixture(scope="module")
def fit_kills(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Fits with ``ModelCheckpoint(async_save=True, save_top_k=2, save_last="link")`` saving every
    step, SIGKILLed three times at random moments and resumed from "last" each time."""
    return _launch(["fit", str(tmp_path_factory.mktemp("fit-kills")), "--kills", "3", "--seed", "0"], _env())


def test_every_file_left_by_a_killed_writer_loads_and_holds_one_snapshot(plugin_kills: dict[str, Any]) -> None:
    assert plugin_kills["kills"] == 5 and plugin_kills["other"] == []
    assert plugin_kills["saves_returned"] > 6  # the processes really were saving when killed
    assert plugin_kills["unloadable"] == []
    assert plugin_kills["inconsistent"] == []


def test_the_write_before_the_one_in_flight_survives_the_kill(plugin_kills: dict[str, Any]) -> None:
    assert plugin_kills["lost"] == []


def test_fits_killed_during_background_writes_leave_loadable_checkpoints(fit_kills: dict[str, Any]) -> None:
    assert fit_kills["reference"] == "exit 0"
    assert fit_kills["kills"] >= 1 and fit_kills["other"] == []
    assert fit_kills["unloadable"] == []
    assert fit_kills["missing_last"] == []


def test_a_fit_resumed_after_the_kills_ends_bit_identical(fit_kills: dict[str, Any]) -> None:
    assert fit_kills["final"] == "exit 0"
    assert "difference" in fit_kills, fit_kills
    assert fit_kills["difference"] is None
