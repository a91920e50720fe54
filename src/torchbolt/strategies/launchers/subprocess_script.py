"""Re-run the user's script in N-1 more processes (``strategy="ddp"``), like ``torchrun`` would.

The process the user started becomes local rank 0; each child runs the same command line with
``LOCAL_RANK`` set. A watcher thread ends the whole job when a child dies, children end when
the main process disappears, and the main process waits for its children before it exits, so a
failure on any rank never leaves the others waiting. Every rank that fails records a summary of its
error (see ``_failures``), so the main process ends its output with one line naming the rank that
failed first and why, instead of its own "Connection closed by peer".
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
from torchbolt.strategies.launchers._failures import (
    FAILURE_DIR_ENV,
    RankFailure,
    latest_first_failure,
    make_failure_dir,
    next_launch,
    record_failure,
    remove_failure_dir,
    wait_for_first_failure,
)
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
        self._failure_dir: str | None = None

    @property
    def is_interactive_compatible(self) -> bool:
        return False

    def launch(self, function: Callable, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        self.cluster_environment.validate_settings(num_devices=self.num_processes, num_nodes=self.num_nodes)
        launch = next_launch()
        if not self.cluster_environment.creates_processes_externally:
            _set_num_threads_if_needed(self.num_processes)
            self._start_children()
        try:
            return function(*args, **kwargs)
        except BaseException as exception:
            # recorded first, before the teardown closes the connections and so makes the peers fail
            own = self._record_failure(exception, launch)
            self._on_failure(exception, launch, own)
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
        self._failure_dir = make_failure_dir()
        os.environ[FAILURE_DIR_ENV] = self._failure_dir
        for local_rank in range(1, self.num_processes):
            child_env = os.environ.copy()
            child_env["LOCAL_RANK"] = str(local_rank)
            child_env[LAUNCHER_PID_ENV] = str(os.getpid())
            self.procs.append(subprocess.Popen(command, env=child_env))
        if self.procs:
            self._observer = _ChildObserver(self.procs, first_rank=env.node_rank() * self.num_processes + 1,
                                            failure_dir=self._failure_dir)
            self._observer.start()
            atexit.register(self._wait_for_children)

    def _global_rank(self) -> int:
        env = self.cluster_environment
        return env.node_rank() * self.num_processes + env.local_rank()

    def _record_failure(self, exception: BaseException, launch: int) -> RankFailure | None:
        """Write this rank's error summary where the main process reads it (only in a job this launcher started)."""
        directory = os.environ.get(FAILURE_DIR_ENV)
        if not directory:
            return None  # started by torchrun or a cluster: nothing here collects the summaries
        if LAUNCHER_PID_ENV in os.environ:
            # when the main process died (e.g. SIGKILL), nobody else will remove the directory; checked at exit,
            # as this error may be the reaction to that death, seen before the death is complete
            atexit.register(_remove_failure_dir_if_orphaned, directory)
        return record_failure(directory, self._global_rank(), exception, launch)

    def _started_the_job(self) -> bool:
        # the process that started the other ranks (possibly through an earlier Trainer's launcher) holds the
        # failure directory and is not itself a child
        return bool(os.environ.get(FAILURE_DIR_ENV)) and LAUNCHER_PID_ENV not in os.environ

    def _on_failure(self, exception: BaseException, launch: int = 0, own: RankFailure | None = None) -> None:
        """This rank failed: say which rank failed first, then stop the children that are still running."""
        if isinstance(exception, _TunerExitException):
            return  # a tuner ending its search run on every rank is not a failure
        if self._started_the_job():
            self._name_first_failure(exception, launch, own)
        if not self.procs:
            return
        graceful = isinstance(exception, (SystemExit, KeyboardInterrupt))
        # a graceful stop (signal, Ctrl-C) ends every rank at the same step: let them finish their teardown
        self._stop_children(timeout=30.0 if graceful else 0.0)

    def _name_first_failure(self, exception: BaseException, launch: int, own: RankFailure | None) -> None:
        """End ``exception``'s printout with a line naming the rank that failed first (a note, printed last).

        Errors that only react to a peer's failure (gloo's "Connection closed by peer") rank after the
        peer's own error; a peer that died without a summary (SIGKILL) is named by its exit status.
        """
        if not hasattr(exception, "add_note"):
            return
        directory = os.environ.get(FAILURE_DIR_ENV, "")
        procs = self.procs
        first = wait_for_first_failure(
            directory, launch, own, peers_gone=(lambda: all(p.poll() is not None for p in procs)) if procs else None
        )
        failed = [(i + 1, p) for i, p in enumerate(procs) if p.poll() not in (None, 0)]
        if first is not None and not first.reaction:
            exception.add_note(first.last_line())
        elif failed:
            rank, proc = failed[0]
            exception.add_note(
                f"Local rank {rank} (pid {proc.pid}) {_describe_exit(proc.returncode)} before this error; its own"
                " traceback is printed above."
            )
        elif first is not None and first.rank != self._global_rank():
            exception.add_note(first.last_line())

    def _stop_children(self, timeout: float) -> None:
        if self._observer is not None:
            self._observer.stop()
            # it may be writing its "rank N exited" line: let it finish, so that nothing follows this error's
            self._observer.join(timeout=1.0)
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
        first = latest_first_failure(self._failure_dir)
        remove_failure_dir(self._failure_dir)
        if self._killed:
            return  # this process failed first and stopped them; its own error was reported
        failed = [(i + 1, p) for i, p in enumerate(self.procs) if p.returncode != 0]
        if failed:
            rank, proc = failed[0]
            sys.stderr.write(f"[torchbolt] local rank {rank} (pid {proc.pid}) {_describe_exit(proc.returncode)}.\n")
            if first is not None:
                sys.stderr.write(first.last_line() + "\n")
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

    def __init__(self, procs: Sequence[subprocess.Popen], first_rank: int, interval: float = 0.5,
                 failure_dir: str | None = None) -> None:
        super().__init__(daemon=True, name="torchbolt-child-observer")
        self._procs = procs
        self._first_rank = first_rank
        self._failure_dir = failure_dir
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
        first = latest_first_failure(self._failure_dir)
        remove_failure_dir(self._failure_dir)  # os._exit skips the exit handler that would remove it
        if first is not None:
            sys.stderr.write(first.last_line() + "\n")
        sys.stderr.flush()
        os._exit(1)


def _remove_failure_dir_if_orphaned(directory: str) -> None:
    """In a child started by :class:`SubprocessScriptLauncher`: remove the job's failure directory when the
    process that started it (and would have removed it) has exited."""
    parent = os.environ.get(LAUNCHER_PID_ENV, "")
    if parent.isdigit() and os.getppid() != int(parent):
        remove_failure_dir(directory)


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
                remove_failure_dir(os.environ.get(FAILURE_DIR_ENV))  # it would have removed it
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="torchbolt-launcher-watch").start()
    _watch_launcher._started = True  # type: ignore[attr-defined]
