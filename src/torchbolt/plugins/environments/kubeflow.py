"""Pods of a Kubeflow ``PyTorchJob`` (one process per pod)."""

from __future__ import annotations

import os

from torchbolt.plugins.environments.cluster_environment import ClusterEnvironment
from torchbolt.utilities.exceptions import MisconfigurationException

_REQUIRED = ("KUBERNETES_PORT", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")


class KubeflowEnvironment(ClusterEnvironment):
    """The training operator sets ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE`` and ``RANK`` in each pod;
    each pod is one node running one process (use ``torchrun`` inside the pod for several devices,
    which then takes precedence as :class:`TorchElasticEnvironment`)."""

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return os.environ["MASTER_ADDR"]

    @property
    def main_port(self) -> int:
        return int(os.environ["MASTER_PORT"])

    @staticmethod
    def detect() -> bool:
        return all(key in os.environ for key in _REQUIRED)

    def world_size(self) -> int:
        return int(os.environ["WORLD_SIZE"])

    def set_world_size(self, size: int) -> None:
        """Ignored: the PyTorchJob fixed the world size."""

    def global_rank(self) -> int:
        return int(os.environ["RANK"])

    def set_global_rank(self, rank: int) -> None:
        """Ignored: the PyTorchJob fixed the rank."""

    def local_rank(self) -> int:
        return 0

    def node_rank(self) -> int:
        return self.global_rank()

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        if num_devices != 1:
            raise MisconfigurationException(
                f"A Kubeflow PyTorchJob runs one process per pod, so `Trainer(devices={num_devices})` cannot be"
                " honoured. Use `devices=1` and one replica per device, or run `torchrun` in each pod."
            )
        world = self.world_size()
        if num_nodes != world:
            raise MisconfigurationException(
                f"`Trainer(num_nodes={num_nodes})` does not match the PyTorchJob's WORLD_SIZE={world} replicas."
                f" Set `num_nodes={world}`."
            )
