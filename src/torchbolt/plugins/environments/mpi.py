"""Processes started by ``mpirun`` (Open MPI, or MPICH / Intel MPI through PMI variables)."""

from __future__ import annotations

import os

from torchbolt.plugins.environments.cluster_environment import ClusterEnvironment
from torchbolt.utilities.exceptions import MisconfigurationException

# (world size, global rank, local rank, local size) variables of each MPI implementation
_VARIABLES = (
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
)


def _variables() -> tuple[str, str, str, str] | None:
    for names in _VARIABLES:
        if all(name in os.environ for name in names[:3]):
            return names
    return None


class MPIEnvironment(ClusterEnvironment):
    """Ranks from the variables ``mpirun`` sets: ``OMPI_COMM_WORLD_{SIZE,RANK,LOCAL_RANK,NODE_RANK}``
    (Open MPI) or ``PMI_SIZE``/``PMI_RANK``/``MPI_LOCALRANKID`` (MPICH, Intel MPI).

    MPI does not tell a process where rank 0 runs: on one node the address is 127.0.0.1; across
    nodes set ``MASTER_ADDR`` (e.g. ``mpirun -x MASTER_ADDR=$(hostname) ...``), or install ``mpi4py``
    and the address of rank 0 is broadcast. ``MASTER_PORT`` defaults to 29500.
    """

    def __init__(self) -> None:
        super().__init__()
        self._address: str | None = None

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        if self._address is None:
            self._address = os.environ.get("MASTER_ADDR") or self._discover_address()
        return self._address

    @property
    def main_port(self) -> int:
        return int(os.environ.get("MASTER_PORT", 29500))

    @staticmethod
    def detect() -> bool:
        return _variables() is not None

    def _names(self) -> tuple[str, str, str, str]:
        names = _variables()
        if names is None:
            raise MisconfigurationException("MPIEnvironment is used but no MPI rank variables are set.")
        return names

    def world_size(self) -> int:
        return int(os.environ[self._names()[0]])

    def set_world_size(self, size: int) -> None:
        """Ignored: mpirun fixed the world size."""

    def global_rank(self) -> int:
        return int(os.environ[self._names()[1]])

    def set_global_rank(self, rank: int) -> None:
        """Ignored: mpirun fixed the rank."""

    def local_rank(self) -> int:
        return int(os.environ[self._names()[2]])

    def _local_size(self) -> int:
        return int(os.environ.get(self._names()[3], self.world_size()))

    def node_rank(self) -> int:
        if "OMPI_COMM_WORLD_NODE_RANK" in os.environ:
            return int(os.environ["OMPI_COMM_WORLD_NODE_RANK"])
        # ranks are placed node by node ("--map-by node" users set NODE_RANK or use Open MPI)
        return int(os.environ.get("NODE_RANK", self.global_rank() // max(1, self._local_size())))

    def _discover_address(self) -> str:
        if self._local_size() == self.world_size():
            return "127.0.0.1"
        try:
            import socket

            from mpi4py import MPI
        except ImportError:
            raise MisconfigurationException(
                "This MPI job spans several nodes, but the address of rank 0 is unknown. Set `MASTER_ADDR` to the"
                " first node's host name (e.g. `mpirun -x MASTER_ADDR=<host> ...`), or `pip install mpi4py`."
            ) from None
        return str(MPI.COMM_WORLD.bcast(socket.gethostname(), root=0))
