"""Running the distributed test scripts as real processes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).parent / "scripts"
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))


def script_env(base: dict[str, str] | None = None, **extra: Any) -> dict[str, str]:
    """``base`` (default: this environment, with this checkout's ``src`` first on ``PYTHONPATH``) for a new job."""
    if base is None:
        base = dict(os.environ)
        src = str(REPO_ROOT / "src")
        base["PYTHONPATH"] = src + (os.pathsep + base["PYTHONPATH"] if base.get("PYTHONPATH") else "")
    env = dict(base)
    # a fresh job: no rank variables inherited from a surrounding launcher
    for key in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                "MASTER_PORT", "TORCHBOLT_LAUNCHER_PID", "TORCHBOLT_FAILURE_DIR"):
        env.pop(key, None)
    for key in [k for k in env if k.startswith(("SLURM_", "OMPI_", "PMI_", "JSM_", "LSB_"))]:
        del env[key]
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(args: list[str], env: dict[str, str], timeout: float = 240, check: bool = True
        ) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited with {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def python(script: str, *args: Any) -> list[str]:
    return [sys.executable, str(SCRIPTS / script), *map(str, args)]


def torchrun(nproc: int, script: str, *args: Any) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            str(SCRIPTS / script), *map(str, args)]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen:
    """Start a job in its own session; the signals tests send it act by default even if this run ignores them."""
    from tests.helpers.signals import with_default_signals

    return subprocess.Popen(with_default_signals(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, **kwargs)


def stop_group(proc: subprocess.Popen) -> None:
    """Kill a process started with :func:`start` and everything it started."""
    import signal

    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)


def read_results_safe(out: Path, name: str, world_size: int = 2) -> list[Any]:
    from common import read_results

    return read_results(str(out), name, world_size)
