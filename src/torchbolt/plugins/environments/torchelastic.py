"""Processes started by ``torchrun`` (TorchElastic)."""

from __future__ import annotations

import os

from torchbolt.plugins.environments.cluster_environment import ClusterEnvironment
from torchbolt.utilities.exceptions import MisconfigurationException

_REQUIRED = ("RANK", "GROUP_RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


class TorchElasticEnvironment(ClusterEnvironment):
    """Ranks and the rendezvous address set by ``torchrun`` / ``torch.distributed.run``.

    Reads ``RANK``, ``LOCAL_RANK``, ``GROUP_RANK`` (the node rank), ``WORLD_SIZE``, ``MASTER_ADDR`` and
    ``MASTER_PORT``. Every process is started by torchrun, so torchbolt starts none itself.
    """

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        return int(os.environ.get("MASTER_PORT", 29500))

    @staticmethod
    def detect() -> bool:
        return all(key in os.environ for key in _REQUIRED)

    def world_size(self) -> int:
        return int(os.environ["WORLD_SIZE"])

    def set_world_size(self, size: int) -> None:
        """Ignored: torchrun fixed the world size."""

    def global_rank(self) -> int:
        return int(os.environ["RANK"])

    def set_global_rank(self, rank: int) -> None:
        """Ignored: torchrun fixed the rank."""

    def local_rank(self) -> int:
        return int(os.environ["LOCAL_RANK"])

    def node_rank(self) -> int:
        return int(os.environ.get("GROUP_RANK", 0))

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", num_devices))
        if local_world != num_devices:
            raise MisconfigurationException(
                f"`Trainer(devices={num_devices})` does not match torchrun's `--nproc_per_node={local_world}`."
                f" Set `devices={local_world}` (or launch torchrun with `--nproc_per_node={num_devices}`)."
            )
        world = self.world_size()
        if world != num_devices * num_nodes:
            raise MisconfigurationException(
                f"`Trainer(devices={num_devices}, num_nodes={num_nodes})` means {num_devices * num_nodes} processes,"
                f" but torchrun started WORLD_SIZE={world}. Set `num_nodes={max(1, world // num_devices)}` to match"
                " torchrun's `--nnodes`."
            )
