"""The default environment: torchbolt itself starts the processes on this machine."""

from __future__ import annotations

import os
import socket

from torchbolt.plugins.environments.cluster_environment import ClusterEnvironment
from torchbolt.utilities.rank_zero import rank_zero_only


def find_free_network_port() -> int:
    """A free TCP port on localhost (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


class LightningEnvironment(ClusterEnvironment):
    """Local launch: ``MASTER_ADDR`` (default 127.0.0.1), ``MASTER_PORT`` (a free port when unset),
    ``NODE_RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` read from the environment."""

    def __init__(self) -> None:
        super().__init__()
        self._main_port: int = -1
        self._global_rank: int = 0
        self._world_size: int = 1

    @property
    def creates_processes_externally(self) -> bool:
        # a process started by our own launcher sees LOCAL_RANK set by it
        return "LOCAL_RANK" in os.environ

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        if self._main_port == -1:
            self._main_port = int(os.environ.get("MASTER_PORT", find_free_network_port()))
        return self._main_port

    @staticmethod
    def detect() -> bool:
        return True

    def world_size(self) -> int:
        return self._world_size

    def set_world_size(self, size: int) -> None:
        self._world_size = size

    def global_rank(self) -> int:
        return self._global_rank

    def set_global_rank(self, rank: int) -> None:
        self._global_rank = rank
        rank_zero_only.rank = rank

    def local_rank(self) -> int:
        return int(os.environ.get("LOCAL_RANK", 0))

    def node_rank(self) -> int:
        group_rank = os.environ.get("GROUP_RANK", 0)
        return int(os.environ.get("NODE_RANK", group_rank))

    def teardown(self) -> None:
        if "WORLD_SIZE" in os.environ:
            del os.environ["WORLD_SIZE"]
