"""``ClusterEnvironment``: where a process learns its rank, the world size and the rendezvous address."""

from __future__ import annotations

from abc import ABC, abstractmethod


class ClusterEnvironment(ABC):
    """Facts about how processes were (or will be) launched, read from the environment."""

    @property
    @abstractmethod
    def creates_processes_externally(self) -> bool:
        """Whether a launcher outside torchbolt (torchrun, srun, mpirun) started every process."""

    @property
    @abstractmethod
    def main_address(self) -> str:
        """The rendezvous host of rank 0."""

    @property
    @abstractmethod
    def main_port(self) -> int:
        """The rendezvous port."""

    @staticmethod
    @abstractmethod
    def detect() -> bool:
        """Whether the current process runs under this environment."""

    @abstractmethod
    def world_size(self) -> int: ...

    @abstractmethod
    def set_world_size(self, size: int) -> None: ...

    @abstractmethod
    def global_rank(self) -> int: ...

    @abstractmethod
    def set_global_rank(self, rank: int) -> None: ...

    @abstractmethod
    def local_rank(self) -> int: ...

    @abstractmethod
    def node_rank(self) -> int: ...

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        """Raise when the Trainer's ``devices``/``num_nodes`` contradict the environment."""

    def teardown(self) -> None:
        """Clean up environment variables set for this run."""
