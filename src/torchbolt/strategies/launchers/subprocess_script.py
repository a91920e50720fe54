"""Re-run the user's script in N-1 more processes (``strategy="ddp"``), like ``torchrun`` would.

The process the user started becomes local rank 0; each child runs the same command line with
``LOCAL_RANK`` set. A watcher thread ends the whole job when a child dies, children end when
the main process disappears, and the main process waits for its children before it exits, so a
failure on any rank never leaves the others waiting.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from torchbolt.plugins.environments.cluster_environment import ClusterEnvironment
from torchbolt.strategies.launchers.launcher import Launcher, _set_num_threads_if_needed
from torchbolt.utilities.exceptions import MisconfigurationException, _TunerExitException

# set in the children: the pid of the process that started them (they exit when it disappears)
LAUNCHER_PID_ENV = "TORCHBOLT_LAUNCHER_PID"
# after a child fails, how long the main process may take to fail by itself before it is stopped
_FAILURE_GRACE_S = 10.0


def _child_command() -> list[str]:
    """The command line that started this process, to start the other ranks with."""
    import __main__

    spec = getattr(__main__, "__spec__", None)
    if spec is not None and spec.name:
        return [sys.executable, "-m", spec.name.removesuffix(".__main__"), *sys.argv[1:]]
    script = sys.argv[0] if sys.argv else ""
    if script in ("", "-c") or not os.path.exists(script):
        raise MisconfigurationException(
            "`Trainer(strategy='ddp')` starts the other processes by running your script again, but this process"
            " was not started from a script file (`python -c`, a notebook or a REPL). Run a script, use"
            " `strategy='ddp_spawn'` (or `'ddp_notebook'` in notebooks), or launch with `torchrun`."
        )
    return [sys.executable, os.path.abspath(script), *sys.argv[1:]]


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class SubprocessScriptLauncher(Launcher):
    """Starts local ranks 1..N-1 by running the current command again.

    Args:
        cluster_environment: where the rendezvous address, node rank and world size come from.
        num_processes: processes on this node.
        num_nodes: nodes in the job (the script is started once per node, e.g. with ``NODE_RANK``).
    """

    def __init__(self, cluster_environment: ClusterEnvironment, num_processes: int, num_nodes: int) -> None:
        self.cluster_environment = cluster_environment
        self.num_processes = num_processes
        self.num_nodes = num_nodes
        self.procs: list[subprocess.Popen] = []
        self._observer: _ChildObserver | None = None
        self._killed = False

    @property
    def is_interactive_compatible(self) -> bool:
        return False

    def launch(self, function: Callable, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        self.cluster_environment.validate_settings(num_devices=self.num_processes, num_nodes=self.num_nodes)
        if not self.cluster_environment.creates_processes_externally:
            _set_num_threads_if_needed(self.num_processes)
            self._start_children()
        try:
            return function(*args, **kwargs)
        except BaseException as exception:
            self._on_failure(exception)
            raise

    def _start_children(self) -> None:
        env = self.cluster_environment
        if env.local_rank() != 0:
            raise RuntimeError(
                f"torchbolt was asked to start processes from local rank {env.local_rank()}; only local rank 0 can."
                " Was LOCAL_RANK set by hand?"
            )
        command = _child_command()
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        os.environ["NODE_RANK"] = str(env.node_rank())
        os.environ["WORLD_SIZE"] = str(self.num_processes * self.num_nodes)
        os.environ["LOCAL_RANK"] = "0"
        for local_rank in range(1, self.num_processes):
            child_env = os.environ.copy()
            child_env["LOCAL_RANK"] = str(local_rank)
            child_env[LAUNCHER_PID_ENV] = str(os.getpid())
            self.procs.append(subprocess.Popen(command, env=child_env))
        if self.procs:
            self._observer = _ChildObserver(self.procs, first_rank=env.node_rank() * self.num_processes + 1)
            self._observer.start()
            atexit.register(self._wait_for_children)

    def _on_failure(self, exception: BaseException) -> None:
        """This rank failed: say which rank failed first, then stop the children that are still running."""
        if not self.procs or isinstance(exception, _TunerExitException):
            return  # a tuner ending its search run on every rank is not a failure
        failed = [(i + 1, p) for i, p in enumerate(self.procs) if p.poll() not in (None, 0)]
        if failed and hasattr(exception, "add_note"):
            rank, proc = failed[0]
            exception.add_note(
                f"Local rank {rank} (pid {proc.pid}) {_describe_exit(proc.returncode)} before this error; its own"
                " traceback is printed above."
            )
        graceful = isinstance(exception, (SystemExit, KeyboardInterrupt))
        # a graceful stop (signal, Ctrl-C) ends every rank at the same step: let them finish their teardown
        self._stop_children(timeout=30.0 if graceful else 0.0)

    def _stop_children(self, timeout: float) -> None:
        if self._observer is not None:
            self._observer.stop()
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            remaining = deadline - time.monotonic()
            if remaining > 0:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(remaining)
        self.kill(signal.SIGKILL)

    def _wait_for_children(self) -> None:
        """At interpreter exit: wait for the other ranks to finish the script; exit non-zero if one failed."""
        for proc in self.procs:
            proc.wait()
        if self._observer is not None:
            self._observer.stop()
        if self._killed:
            return  # this process failed first and stopped them; its own error was reported
        failed = [(i + 1, p) for i, p in enumerate(self.procs) if p.returncode != 0]
        if failed:
            rank, proc = failed[0]
            sys.stderr.write(f"[torchbolt] local rank {rank} (pid {proc.pid}) {_describe_exit(proc.returncode)}.\n")
            sys.stderr.flush()
            sys.stdout.flush()
            os._exit(1)

    def kill(self, signum: int) -> None:
        self._killed = self._killed or signum == signal.SIGKILL
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["procs"] = []
        state["_observer"] = None
        return state


class _ChildObserver(threading.Thread):
    """Watches the children; when one fails, gives this process a moment to fail too, then ends the job."""

    def __init__(self, procs: Sequence[subprocess.Popen], first_rank: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True, name="torchbolt-child-observer")
        self._procs = procs
        self._first_rank = first_rank
        self._interval = interval
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        while not self._stopped.wait(self._interval):
            for i, proc in enumerate(self._procs):
                code = proc.poll()
                if code is not None and code != 0:
                    self._end_job(self._first_rank + i, proc, code)
                    return

    def _end_job(self, rank: int, proc: subprocess.Popen, code: int) -> None:
        sys.stderr.write(
            f"[torchbolt] rank {rank} (pid {proc.pid}) {_describe_exit(code)}; stopping the other processes.\n"
        )
        sys.stderr.flush()
        # the main thread usually fails on its own right away (its peers' connections closed)
        if self._stopped.wait(_FAILURE_GRACE_S):
            return
        for other in self._procs:
            if other.poll() is None:
                other.kill()
        sys.stderr.write(f"[torchbolt] rank {rank} failed and this process did not stop by itself; exiting.\n")
        sys.stderr.flush()
        os._exit(1)


def _watch_launcher() -> None:
    """In a child started by :class:`SubprocessScriptLauncher`: exit when the process that started it is gone."""
    parent = os.environ.get(LAUNCHER_PID_ENV)
    if parent is None or getattr(_watch_launcher, "_started", False):
        return
    parent_pid = int(parent)
    if os.getppid() != parent_pid:
        return  # started some other way (e.g. a test harness re-using the variable)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                sys.stderr.write(f"[torchbolt] the main process (pid {parent_pid}) is gone; exiting.\n")
                sys.stderr.flush()
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="torchbolt-launcher-watch").start()
    _watch_launcher._started = True  # type: ignore[attr-defined]
