"""Real training processes killed with SIGKILL: checkpoints never corrupt, and resume is bit-exact.

``_crash_launcher.py`` imports torch once and forks one training process per run; each run is
killed with a real ``SIGKILL``, either by the launcher at a random moment (while a checkpoint is
written after every step) or by itself at a chosen batch. CPU, fp32, ``deterministic=True``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

LAUNCHER = Path(__file__).with_name("_crash_launcher.py")
SCENARIOS = ["mid-epoch", "mid-accumulation", "epoch-boundary", "two-workers", "epoch-scheduler-val-mid-epoch"]

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the launcher forks one process per training run")


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


def _shm_available(tmp: Path) -> bool:
    return os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) and (
        os.stat("/dev/shm").st_dev != os.stat(tmp).st_dev)


@pytest.fixture(scope="module", params=["same-filesystem-as-tmp", "dev-shm"])
def random_kills(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One launcher run per filesystem: 10 random SIGKILLs while checkpointing every step, each run
    restarted with ``fit(ckpt_path="last")``, then a final run to the end."""
    tmp = tmp_path_factory.mktemp("kills")
    if request.param == "dev-shm":
        if not _shm_available(tmp):
            pytest.skip("/dev/shm is missing, read-only, or on the same filesystem as the temp directory")
        root = Path("/dev/shm") / f"torchbolt-kills-{uuid.uuid4().hex}"
        root.mkdir()
        request.addfinalizer(lambda: shutil.rmtree(root, ignore_errors=True))
    else:
        root = tmp
    return _launch(["random-kills", str(root), "--kills", "10", "--seed", "0"], _env())


def test_random_sigkills_happen_while_checkpointing(random_kills: dict[str, Any]) -> None:
    assert random_kills["reference"] == "exit 0"
    assert random_kills["kills"] >= 10, random_kills
    assert random_kills["other"] == []


def test_every_checkpoint_left_after_a_random_sigkill_loads(random_kills: dict[str, Any]) -> None:
    assert random_kills["unloadable"] == []


def test_last_completed_checkpoint_survives_a_random_sigkill(random_kills: dict[str, Any]) -> None:
    assert random_kills["missing_last"] == []


def test_interrupted_writes_leave_only_temp_files_that_the_next_run_removes(random_kills: dict[str, Any]) -> None:
    assert random_kills["final"] == "exit 0"
    assert random_kills["temp_files_after_restart"] == 0


def test_run_killed_at_random_moments_and_resumed_ends_bit_identical(random_kills: dict[str, Any]) -> None:
    assert "difference" in random_kills, random_kills
    assert random_kills["difference"] is None


@pytest.fixture(scope="module")
def kill_resume(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every scenario, in one launcher run: an uninterrupted run, a run that SIGKILLs itself at the
    scenario's point while ``ModelCheckpoint`` saves every step, and ``fit(ckpt_path="last")``."""
    return _launch(["kill-resume", str(tmp_path_factory.mktemp("kill-resume")), "--scenario", "all"], _env())


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_killed_then_resumed_run_matches_uninterrupted_bit_for_bit(scenario: str, kill_resume: dict[str, Any]
                                                                   ) -> None:
    result = kill_resume[scenario]
    assert result["reference"] == "exit 0"
    assert result["killed"] == "signal 9"
    assert "last.ckpt" in result["checkpoints_left"]
    assert result["resumed"] == "exit 0"
    assert result["difference"] is None


@pytest.fixture(scope="module")
def between_writes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Runs that SIGKILL themselves after a step's top-k file is in place and before its ``last`` is
    written (once at the first save, leaving no ``last``; once later, leaving an older ``last``), then
    ``fit(ckpt_path="last")``."""
    return _launch(["kill-between-writes", str(tmp_path_factory.mktemp("between-writes"))], _env())


@pytest.mark.parametrize("case", ["no-last", "older-last"])
def test_kill_between_top_k_and_last_writes_resumes_from_the_top_k_checkpoint(case: str,
                                                                              between_writes: dict[str, Any]
                                                                              ) -> None:
    result = between_writes[case]
    assert between_writes["reference"] == "exit 0"
    assert result["killed"] == "signal 9"
    assert result["unloadable"] == []
    # the window was hit: `last` is missing, or from an earlier save than the top-k file
    if case == "no-last":
        assert result["last_step"] is None
    else:
        assert result["last_step"] is not None and result["last_step"] < result["killed_step"]
    assert result["resumed"] == "exit 0"
    assert result["resumed_from"] == result["killed_file"]
    assert result["start_step"] == result["killed_step"] > 0
    ref_step, resumed_step = result["final_step"]
    assert ref_step == resumed_step
    assert result["difference"] is None
