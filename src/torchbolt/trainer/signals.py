"""SIGTERM and the requeue signal during ``fit``: the handler only sets a flag; the action happens at
the next step boundary, on every rank at the same step.

- SIGTERM: stop at the next step boundary (``SIGTERMException``; ``on_exception`` hooks run). Under
  SLURM with ``auto_requeue`` a checkpoint is saved first (``hpc_ckpt_<n>.ckpt`` in ``default_root_dir``).
- The requeue signal (SIGUSR1 unless the SLURM environment names another): save that checkpoint,
  run ``scontrol requeue <job>`` when under SLURM with ``auto_requeue``, and stop. A requeued SLURM
  job resumes from the newest ``hpc_ckpt_<n>.ckpt`` automatically; elsewhere pass ``ckpt_path="hpc"``.

Ranks agree through :meth:`Strategy.exchange_flags`, a non-blocking exchange, so a signal that reaches
only some processes still stops all of them at the same step, and no step waits for it.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn

from torchbolt.plugins.environments.cluster_environment import ClusterEnvironment
from torchbolt.plugins.environments.slurm import SLURMEnvironment
from torchbolt.plugins.io.async_io import wait_for_checkpoint_writes
from torchbolt.strategies.strategy import Strategy
from torchbolt.utilities.cloud_io import get_filesystem
from torchbolt.utilities.exceptions import SIGTERMException
from torchbolt.utilities.rank_zero import rank_zero_info

if TYPE_CHECKING:
    from torchbolt.trainer.trainer import Trainer

log = logging.getLogger("torchbolt")

SIGTERM_FLAG = 1
REQUEUE_FLAG = 2
_HPC_PATTERN = re.compile(r"^hpc_ckpt_(\d+)\.ckpt$")


def _hpc_versions(folder: str) -> list[int]:
    fs = get_filesystem(folder)
    if not fs.isdir(folder):
        return []
    versions = []
    for entry in fs.ls(folder, detail=False):
        match = _HPC_PATTERN.match(os.path.basename(str(entry).rstrip("/")))
        if match:
            versions.append(int(match.group(1)))
    return versions


def hpc_resume_path(folder: str) -> str | None:
    """The newest ``hpc_ckpt_<n>.ckpt`` in ``folder``, or ``None``."""
    versions = _hpc_versions(folder)
    return os.path.join(folder, f"hpc_ckpt_{max(versions)}.ckpt") if versions else None


def hpc_save_path(folder: str) -> str:
    """The next free ``hpc_ckpt_<n>.ckpt`` in ``folder``."""
    versions = _hpc_versions(folder)
    return os.path.join(folder, f"hpc_ckpt_{max(versions, default=0) + 1}.ckpt")


class SignalHandler:
    """Installs the handlers for the duration of a ``fit`` and turns signals into actions at step boundaries."""

    def __init__(self) -> None:
        self._received = 0
        self.agreed = 0
        self._original: dict[int, Any] = {}
        self._auto_requeue = False
        self._requeue_signal: int | None = None

    def register(self, environment: ClusterEnvironment) -> None:
        """Install the handlers (main thread only; handlers already installed by the user keep running)."""
        self._received = 0
        self.agreed = 0
        if threading.current_thread() is not threading.main_thread() or os.name == "nt":
            return
        slurm = isinstance(environment, SLURMEnvironment)
        self._auto_requeue = slurm and environment.auto_requeue  # type: ignore[attr-defined]
        self._requeue_signal = environment.requeue_signal if slurm else getattr(  # type: ignore[attr-defined]
            signal, "SIGUSR1", None)
        self._install(signal.SIGTERM, SIGTERM_FLAG)
        requeue = self._requeue_signal
        # a handler the user installed for this signal keeps it
        if (requeue is not None and (self._auto_requeue or not slurm)
                and signal.getsignal(requeue) in (signal.SIG_DFL, None)):
            self._install(requeue, REQUEUE_FLAG)

    def _install(self, signum: int, flag: int) -> None:
        previous = signal.getsignal(signum)
        self._original[signum] = previous

        def handler(received: int, frame: Any) -> None:
            self._received |= flag
            if callable(previous):
                previous(received, frame)

        signal.signal(signum, handler)

    def teardown(self) -> None:
        """Restore the handlers that were installed before :meth:`register`."""
        if threading.current_thread() is threading.main_thread():
            for signum, handler in self._original.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._original = {}

    def poll(self, strategy: Strategy) -> bool:
        """Called once per training batch: whether the ranks agreed that a signal arrived (no host sync)."""
        self.agreed |= strategy.exchange_flags(self._received)
        return self.agreed != 0

    def _poll_alone(self) -> bool:
        received = self._received
        if received:  # the common step reads two attributes and does no arithmetic
            self.agreed |= received
        return self.agreed != 0

    def poller(self, strategy: Strategy) -> Callable[[], bool]:
        """:meth:`poll` bound to ``strategy``; with a strategy that exchanges nothing (one process), one that
        reads the flags without calling into it (the per-batch check costs one call)."""
        if type(strategy).exchange_flags is Strategy.exchange_flags:
            return self._poll_alone
        return partial(self.poll, strategy)

    def stop(self, trainer: Trainer) -> NoReturn:
        """End ``fit`` at this step boundary: checkpoint and requeue when the signal asks for it, then raise."""
        flags = self.agreed
        wants_checkpoint = bool(flags & REQUEUE_FLAG) or (bool(flags & SIGTERM_FLAG) and self._auto_requeue)
        if wants_checkpoint:
            # rank 0 names the file, so every rank writes (its shard of) the same checkpoint
            path: str = trainer.strategy.broadcast(hpc_save_path(trainer.default_root_dir)
                                                   if trainer.is_global_zero else "")
            rank_zero_info(f"Signal received: saving a checkpoint to {path} before stopping.")
            for logger in trainer.loggers:
                logger.save()
            trainer.save_checkpoint(path)
            if flags & REQUEUE_FLAG and self._auto_requeue and trainer.is_global_zero:
                wait_for_checkpoint_writes(trainer.strategy.checkpoint_io)  # requeueing ends this process
                _requeue()
        trainer.strategy.finish_flag_exchange()
        raise SIGTERMException


def _requeue() -> None:
    job_id = SLURMEnvironment.requeue_id()
    if job_id is None or not re.fullmatch(r"[0-9_]+", job_id):
        log.warning(f"Cannot requeue: the SLURM job id {job_id!r} is missing or malformed.")
        return
    log.info(f"Requeuing SLURM job {job_id}")
    try:
        result = subprocess.call(["scontrol", "requeue", job_id])
    except FileNotFoundError:
        log.warning("Cannot requeue: `scontrol` was not found on PATH.")
        return
    if result != 0:
        log.warning(f"`scontrol requeue {job_id}` failed with exit code {result}.")
