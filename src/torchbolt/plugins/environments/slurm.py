"""Processes started by SLURM's ``srun``; auto-requeue on the requeue signal."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys

from torchbolt.plugins.environments.cluster_environment import ClusterEnvironment
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import PossibleUserWarning, rank_zero_warn


def _is_interactive() -> bool:
    # `salloc` then `python train.py` (or `srun --pty bash`) is an interactive shell, not a parallel step
    return os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive")


def _is_srun_used() -> bool:
    return "SLURM_NTASKS" in os.environ and not _is_interactive()


class SLURMEnvironment(ClusterEnvironment):
    """Ranks from ``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_NODEID``, the world from ``SLURM_NTASKS``.

    Launch one task per device with ``srun`` (``#SBATCH --ntasks-per-node=<devices>``). The main
    address is the first host of ``SLURM_NODELIST`` (or ``MASTER_ADDR``), the port ``MASTER_PORT`` or one
    derived from the job id, so every task computes the same one.

    Args:
        auto_requeue: on ``requeue_signal`` (and SIGTERM) save a checkpoint at the next step boundary,
            run ``scontrol requeue <job id>``, and stop; the requeued job resumes from that checkpoint.
        requeue_signal: the signal SLURM sends before the time limit (``#SBATCH --signal=USR1@90``).

    Example::

        trainer = Trainer(accelerator="gpu", devices=4, num_nodes=2,
                          plugins=[SLURMEnvironment(requeue_signal=signal.SIGHUP)])
    """

    def __init__(self, auto_requeue: bool = True, requeue_signal: signal.Signals | None = None) -> None:
        super().__init__()
        self.auto_requeue = auto_requeue
        if requeue_signal is None and sys.platform != "win32":
            requeue_signal = signal.SIGUSR1
        self.requeue_signal = requeue_signal

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        address = os.environ.get("MASTER_ADDR")
        if address is None:
            address = self.resolve_root_node_address(os.environ.get("SLURM_NODELIST", "127.0.0.1"))
            os.environ["MASTER_ADDR"] = address
        return address

    @property
    def main_port(self) -> int:
        port = os.environ.get("MASTER_PORT")
        if port is None:
            # every task derives the same port from the job id, so no exchange is needed
            job_id = self.job_id() or 0
            port = str(int(str(job_id)[-4:]) + 15000)
            os.environ["MASTER_PORT"] = port
        return int(port)

    @staticmethod
    def detect() -> bool:
        return _is_srun_used()

    @staticmethod
    def job_name() -> str | None:
        return os.environ.get("SLURM_JOB_NAME")

    @staticmethod
    def job_id() -> int | None:
        """The job id (``None`` in an interactive session)."""
        if _is_interactive():
            return None
        job_id = os.environ.get("SLURM_JOB_ID")
        try:
            return int(job_id) if job_id is not None else None
        except ValueError:
            return None

    @staticmethod
    def requeue_id() -> str | None:
        """The id ``scontrol requeue`` takes: ``<array job>_<task>`` for array jobs, else the job id."""
        array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
        if array_job is not None and "SLURM_ARRAY_TASK_ID" in os.environ:
            return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        return os.environ.get("SLURM_JOB_ID")

    def world_size(self) -> int:
        return int(os.environ["SLURM_NTASKS"])

    def set_world_size(self, size: int) -> None:
        """Ignored: SLURM fixed the world size."""

    def global_rank(self) -> int:
        return int(os.environ["SLURM_PROCID"])

    def set_global_rank(self, rank: int) -> None:
        """Ignored: SLURM fixed the rank."""

    def local_rank(self) -> int:
        return int(os.environ["SLURM_LOCALID"])

    def node_rank(self) -> int:
        return int(os.environ["SLURM_NODEID"])

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        if _is_interactive():
            return
        ntasks = int(os.environ.get("SLURM_NTASKS", "1"))
        per_node = os.environ.get("SLURM_NTASKS_PER_NODE")
        if ntasks > 1 and per_node is None:
            raise MisconfigurationException(
                f"The SLURM job sets `--ntasks={ntasks}` without `--ntasks-per-node`. Use"
                f" `#SBATCH --ntasks-per-node={num_devices}` (one task per device) instead."
            )
        if per_node is not None:
            # "4" or "4(x2)" when nodes have the same count
            count = int(re.split(r"[(,]", per_node)[0])
            if count != num_devices:
                raise MisconfigurationException(
                    f"`Trainer(devices={num_devices})` does not match SLURM's `--ntasks-per-node={count}`."
                    f" Set `devices={count}` or `#SBATCH --ntasks-per-node={num_devices}`."
                )
        nnodes = os.environ.get("SLURM_NNODES")
        if nnodes is not None and int(nnodes) != num_nodes:
            raise MisconfigurationException(
                f"`Trainer(num_nodes={num_nodes})` does not match SLURM's `--nodes={nnodes}`."
                f" Set `num_nodes={nnodes}`."
            )

    @staticmethod
    def resolve_root_node_address(nodes: str) -> str:
        """The first host of a SLURM node list: ``"host[05-09,12]"`` -> ``"host05"``, ``"a,b"`` -> ``"a"``."""
        nodes = re.sub(r"\[(.*?)[,-].*\]", "\\1", nodes)
        nodes = re.sub(r"\[(.*?)\]", "\\1", nodes)
        return nodes.split(" ")[0].split(",")[0]

    @staticmethod
    def _validate_srun_used() -> None:
        """Warn when ``srun`` exists but did not start this process (a multi-task job would hang)."""
        if sys.platform == "win32" or _is_srun_used() or shutil.which("srun") is None:
            return
        hint = " ".join(["srun", os.path.basename(sys.executable), *sys.argv])[:80]
        rank_zero_warn(
            "The `srun` command is available but did not start this process. To run on SLURM, prefix the"
            f" command with `srun`: {hint} ...",
            category=PossibleUserWarning,
        )
