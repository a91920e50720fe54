"""Cluster environments: how each process learns its place in the job."""

from torchbolt.plugins.environments.cluster_environment import ClusterEnvironment
from torchbolt.plugins.environments.kubeflow import KubeflowEnvironment
from torchbolt.plugins.environments.lightning import LightningEnvironment
from torchbolt.plugins.environments.lsf import LSFEnvironment
from torchbolt.plugins.environments.mpi import MPIEnvironment
from torchbolt.plugins.environments.slurm import SLURMEnvironment
from torchbolt.plugins.environments.torchelastic import TorchElasticEnvironment
from torchbolt.plugins.environments.xla import XLAEnvironment

__all__ = [
    "ClusterEnvironment",
    "KubeflowEnvironment",
    "LSFEnvironment",
    "LightningEnvironment",
    "MPIEnvironment",
    "SLURMEnvironment",
    "TorchElasticEnvironment",
    "XLAEnvironment",
    "detect_cluster_environment",
]

# Most specific first: torchrun inside a SLURM step or a Kubeflow pod sets its own ranks, which win.
_DETECTION_ORDER: tuple[type[ClusterEnvironment], ...] = (
    TorchElasticEnvironment,
    SLURMEnvironment,
    LSFEnvironment,
    MPIEnvironment,
    KubeflowEnvironment,
)


def detect_cluster_environment() -> ClusterEnvironment:
    """The environment this process was launched in (torchrun, SLURM, LSF, MPI, Kubeflow), else the local one.

    Example::

        env = detect_cluster_environment()
        print(type(env).__name__, env.world_size())
    """
    for env_cls in _DETECTION_ORDER:
        if env_cls.detect():
            return env_cls()
    SLURMEnvironment._validate_srun_used()
    return LightningEnvironment()
