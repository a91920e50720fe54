"""Cluster environments are detected from the variables their launchers set."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from torchbolt.plugins.environments import (
    KubeflowEnvironment,
    LightningEnvironment,
    LSFEnvironment,
    MPIEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
    detect_cluster_environment,
)
from torchbolt.utilities.exceptions import MisconfigurationException

_PREFIXES = ("SLURM_", "OMPI_", "PMI_", "MPI_LOCAL", "JSM_", "LSB_")
_KEYS = ("RANK", "LOCAL_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR",
         "MASTER_PORT", "KUBERNETES_PORT")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith(_PREFIXES) or key in _KEYS:
            monkeypatch.delenv(key)


def _set(monkeypatch: pytest.MonkeyPatch, **values: object) -> None:
    for key, value in values.items():
        monkeypatch.setenv(key, str(value))


def test_plain_local_environment_by_default() -> None:
    assert type(detect_cluster_environment()) is LightningEnvironment


def test_local_environment_reads_node_rank_and_address(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(monkeypatch, NODE_RANK=1, MASTER_ADDR="10.0.0.1", MASTER_PORT=1234)
    env = detect_cluster_environment()
    assert isinstance(env, LightningEnvironment)
    assert (env.node_rank(), env.main_address, env.main_port) == (1, "10.0.0.1", 1234)
    assert not env.creates_processes_externally


def test_torchrun_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(monkeypatch, RANK=3, LOCAL_RANK=1, GROUP_RANK=1, LOCAL_WORLD_SIZE=2, WORLD_SIZE=4, MASTER_ADDR="h0",
         MASTER_PORT=29400)
    env = detect_cluster_environment()
    assert isinstance(env, TorchElasticEnvironment)
    assert (env.global_rank(), env.local_rank(), env.node_rank(), env.world_size()) == (3, 1, 1, 4)
    assert env.creates_processes_externally and env.main_address == "h0" and env.main_port == 29400
    env.validate_settings(num_devices=2, num_nodes=2)
    with pytest.raises(MisconfigurationException, match="nproc_per_node=2"):
        env.validate_settings(num_devices=4, num_nodes=1)


def _slurm(monkeypatch: pytest.MonkeyPatch, **extra: object) -> None:
    values: dict[str, object] = dict(
        SLURM_NTASKS=8, SLURM_NTASKS_PER_NODE=4, SLURM_NNODES=2, SLURM_PROCID=5, SLURM_LOCALID=1, SLURM_NODEID=1,
        SLURM_JOB_ID=123456, SLURM_JOB_NAME="train", SLURM_NODELIST="gpu[07-08]")
    values.update(extra)
    _set(monkeypatch, **values)


def test_slurm_is_detected_with_world_from_its_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    _slurm(monkeypatch)
    env = detect_cluster_environment()
    assert isinstance(env, SLURMEnvironment)
    assert (env.global_rank(), env.local_rank(), env.node_rank(), env.world_size()) == (5, 1, 1, 8)
    assert env.main_address == "gpu07"
    assert env.main_port == 3456 + 15000  # every task derives the same port from the job id
    env.validate_settings(num_devices=4, num_nodes=2)


def test_slurm_settings_that_contradict_the_trainer_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    _slurm(monkeypatch)
    env = SLURMEnvironment()
    with pytest.raises(MisconfigurationException, match="ntasks-per-node=4"):
        env.validate_settings(num_devices=2, num_nodes=2)
    with pytest.raises(MisconfigurationException, match="nodes=2"):
        env.validate_settings(num_devices=4, num_nodes=1)


def test_slurm_interactive_session_is_not_a_parallel_job(monkeypatch: pytest.MonkeyPatch) -> None:
    _slurm(monkeypatch, SLURM_JOB_NAME="bash")
    assert isinstance(detect_cluster_environment(), LightningEnvironment)


@pytest.mark.parametrize(("nodes", "root"), [("host1,host2", "host1"), ("host[5-9]", "host5"),
                                             ("node[010,012-015]", "node010"), ("alone", "alone"),
                                             ("a[3] b[4]", "a3")])
def test_slurm_root_node_address(nodes: str, root: str) -> None:
    assert SLURMEnvironment.resolve_root_node_address(nodes) == root


def test_slurm_array_job_requeue_id(monkeypatch: pytest.MonkeyPatch) -> None:
    _slurm(monkeypatch, SLURM_ARRAY_JOB_ID=99, SLURM_ARRAY_TASK_ID=3)
    assert SLURMEnvironment.requeue_id() == "99_3"


def test_torchrun_inside_slurm_uses_torchruns_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    _slurm(monkeypatch)
    _set(monkeypatch, RANK=0, LOCAL_RANK=0, GROUP_RANK=0, LOCAL_WORLD_SIZE=1, WORLD_SIZE=1)
    assert isinstance(detect_cluster_environment(), TorchElasticEnvironment)


def test_lsf_is_detected_and_reads_hosts_from_the_rank_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    host = socket.gethostname()
    rankfile = tmp_path / "rankfile"
    rankfile.write_text(f"launchnode\notherhost\notherhost\n{host}\n{host}\n")
    _set(monkeypatch, LSB_JOBID=4321, LSB_DJOB_RANKFILE=rankfile, JSM_NAMESPACE_LOCAL_RANK=1,
         JSM_NAMESPACE_SIZE=4, JSM_NAMESPACE_RANK=3)
    env = detect_cluster_environment()
    assert isinstance(env, LSFEnvironment)
    assert (env.global_rank(), env.local_rank(), env.world_size(), env.node_rank()) == (3, 1, 4, 1)
    assert env.main_address == "otherhost"
    assert env.main_port == 4321 % 1000 + 10000


def test_open_mpi_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(monkeypatch, OMPI_COMM_WORLD_SIZE=4, OMPI_COMM_WORLD_RANK=2, OMPI_COMM_WORLD_LOCAL_RANK=0,
         OMPI_COMM_WORLD_LOCAL_SIZE=2, OMPI_COMM_WORLD_NODE_RANK=1, MASTER_ADDR="head")
    env = detect_cluster_environment()
    assert isinstance(env, MPIEnvironment)
    assert (env.global_rank(), env.local_rank(), env.node_rank(), env.world_size()) == (2, 0, 1, 4)
    assert env.main_address == "head" and env.main_port == 29500


def test_mpi_on_one_node_needs_no_address(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(monkeypatch, PMI_SIZE=2, PMI_RANK=1, MPI_LOCALRANKID=1, MPI_LOCALNRANKS=2)
    env = detect_cluster_environment()
    assert isinstance(env, MPIEnvironment)
    assert env.main_address == "127.0.0.1" and env.node_rank() == 0


def test_mpi_across_nodes_without_an_address_says_how_to_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if it were not installed
    _set(monkeypatch, OMPI_COMM_WORLD_SIZE=4, OMPI_COMM_WORLD_RANK=2, OMPI_COMM_WORLD_LOCAL_RANK=0,
         OMPI_COMM_WORLD_LOCAL_SIZE=2)
    with pytest.raises(MisconfigurationException, match="MASTER_ADDR"):
        _ = MPIEnvironment().main_address


def test_kubeflow_pytorchjob_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(monkeypatch, KUBERNETES_PORT="tcp://10.0.0.1:443", MASTER_ADDR="job-master-0", MASTER_PORT=23456,
         WORLD_SIZE=3, RANK=2)
    env = detect_cluster_environment()
    assert isinstance(env, KubeflowEnvironment)
    assert (env.global_rank(), env.local_rank(), env.node_rank(), env.world_size()) == (2, 0, 2, 3)
    assert env.main_address == "job-master-0" and env.main_port == 23456
    env.validate_settings(num_devices=1, num_nodes=3)
    with pytest.raises(MisconfigurationException, match="one process per pod"):
        env.validate_settings(num_devices=2, num_nodes=3)


def test_trainer_picks_ddp_and_the_environment_under_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchbolt as pl
    from torchbolt.strategies import DDPStrategy

    _slurm(monkeypatch)
    trainer = pl.Trainer(accelerator="cpu", devices=4, num_nodes=2, logger=False, max_epochs=1)
    assert isinstance(trainer.strategy, DDPStrategy)
    assert isinstance(trainer.strategy.cluster_environment, SLURMEnvironment)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank, trainer.world_size) == (5, 1, 1, 8)
