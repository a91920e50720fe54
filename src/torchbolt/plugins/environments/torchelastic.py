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

    Args:
        auto_resume: self-healing runs. When torchrun restarts the workers after a failure
            (``--max-restarts`` > 0, ``TORCHELASTIC_RESTART_COUNT`` > 0), ``trainer.fit(model)`` called
            without ``ckpt_path`` resumes from the newest complete checkpoint that this run wrote (see
            "Self-healing runs" in ``docs/distributed.md``). ``False`` turns it off: every attempt trains
            from the start, or from the ``ckpt_path`` you pass.

    Example::

        # torchrun --nproc_per_node=4 --max-restarts=3 train.py
        trainer = Trainer(devices=4, plugins=[TorchElasticEnvironment(auto_resume=False)])
    """

    def __init__(self, auto_resume: bool = True) -> None:
        super().__init__()
        if not isinstance(auto_resume, bool):
            raise TypeError(f"`TorchElasticEnvironment(auto_resume={auto_resume!r})`: pass True or False.")
        self.auto_resume = auto_resume

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

    @staticmethod
    def restart_count() -> int:
        """How many times torchrun has restarted the workers of this run (``TORCHELASTIC_RESTART_COUNT``;
        0 in the first attempt and outside torchrun)."""
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))

    @staticmethod
    def max_restarts() -> int:
        """torchrun's ``--max-restarts`` (``TORCHELASTIC_MAX_RESTARTS``; 0 outside torchrun)."""
        return int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", 0))

    @staticmethod
    def run_id() -> str | None:
        """torchrun's ``--rdzv-id`` (``TORCHELASTIC_RUN_ID``; a fresh id per launch with ``--standalone``,
        ``"none"`` when ``--rdzv-id`` is not given otherwise), or ``None`` outside torchrun."""
        return os.environ.get("TORCHELASTIC_RUN_ID")

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
