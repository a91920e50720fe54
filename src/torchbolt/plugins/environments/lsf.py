"""Processes started by IBM Spectrum LSF's ``jsrun``."""

from __future__ import annotations

import os
import socket

from torchbolt.plugins.environments.cluster_environment import ClusterEnvironment
from torchbolt.utilities.exceptions import MisconfigurationException

_REQUIRED = ("LSB_JOBID", "LSB_DJOB_RANKFILE", "JSM_NAMESPACE_LOCAL_RANK", "JSM_NAMESPACE_SIZE")


class LSFEnvironment(ClusterEnvironment):
    """Ranks from ``JSM_NAMESPACE_RANK``/``JSM_NAMESPACE_LOCAL_RANK``, the world from ``JSM_NAMESPACE_SIZE``.

    The hosts come from the rank file ``LSB_DJOB_RANKFILE`` (its first line is the launch node and is
    skipped); the main address is the first compute host, the port ``MASTER_PORT`` or one derived from
    ``LSB_JOBID``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._hosts: list[str] | None = None

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR") or self._read_hosts()[0]

    @property
    def main_port(self) -> int:
        port = os.environ.get("MASTER_PORT")
        if port is not None:
            return int(port)
        return int(os.environ["LSB_JOBID"]) % 1000 + 10000

    @staticmethod
    def detect() -> bool:
        return all(key in os.environ for key in _REQUIRED)

    def world_size(self) -> int:
        return int(os.environ["JSM_NAMESPACE_SIZE"])

    def set_world_size(self, size: int) -> None:
        """Ignored: LSF fixed the world size."""

    def global_rank(self) -> int:
        return int(os.environ["JSM_NAMESPACE_RANK"])

    def set_global_rank(self, rank: int) -> None:
        """Ignored: LSF fixed the rank."""

    def local_rank(self) -> int:
        return int(os.environ["JSM_NAMESPACE_LOCAL_RANK"])

    def node_rank(self) -> int:
        hosts = list(dict.fromkeys(self._read_hosts()))
        hostname = socket.gethostname()
        if hostname not in hosts:
            raise MisconfigurationException(
                f"This host ({hostname!r}) is not in the LSF rank file {os.environ['LSB_DJOB_RANKFILE']!r}"
                f" (hosts: {hosts})."
            )
        return hosts.index(hostname)

    def _read_hosts(self) -> list[str]:
        if self._hosts is None:
            path = os.environ["LSB_DJOB_RANKFILE"]
            try:
                with open(path) as f:
                    lines = [line.strip() for line in f if line.strip()]
            except OSError as e:
                raise MisconfigurationException(f"Cannot read the LSF rank file `LSB_DJOB_RANKFILE={path}`: {e}") from e
            if len(lines) < 2:
                raise MisconfigurationException(
                    f"The LSF rank file {path!r} lists no compute host (only the launch node)."
                )
            self._hosts = lines[1:]
        return self._hosts
