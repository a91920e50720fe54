"""Plug-ins in real 2-rank gloo jobs: layer synchronization under DDP, and consolidating a sharded FSDP
checkpoint into one file that `load_from_checkpoint` reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from _launch import python, read_results_safe, run, script_env


def test_layer_sync_plugin_keeps_batchnorm_statistics_equal_across_ranks(tmp_path: Path) -> None:
    run(python("plugin_checks.py", tmp_path, "layer_sync"), env=script_env(), timeout=240)
    rank0, rank1 = read_results_safe(tmp_path, "layer_sync")
    for result in (rank0, rank1):
        assert result["synced"]["during"] == "_AllReduceBatchNorm1d"  # applied before the run
        assert result["synced"]["after"] == "BatchNorm1d"  # reverted afterwards
        assert result["local"]["during"] == "BatchNorm1d"
    # the ranks saw different batches: statistics agree only when the plug-in synchronized them
    assert rank0["synced"]["mean"] == rank1["synced"]["mean"] and rank0["synced"]["var"] == rank1["synced"]["var"]
    assert rank0["synced"]["batches"] == 4
    assert rank0["local"]["mean"] != rank1["local"]["mean"]
    # torch's SyncBatchNorm (its training forward needs CUDA): converted and reverted inside the process group
    for result in (rank0, rank1):
        assert result["torch"] == {"converted": "SyncBatchNorm", "reverted": "BatchNorm1d", "same_output": True,
                                   "world_size": 2}


def test_consolidated_sharded_checkpoint_loads_with_load_from_checkpoint(tmp_path: Path) -> None:
    from plugin_checks import ShardedNet

    run(python("plugin_checks.py", tmp_path, "sharded"), env=script_env(), timeout=240)
    saved = read_results_safe(tmp_path, "sharded")[0]
    sharded = tmp_path / "sharded.ckpt"
    assert sorted(p.name for p in sharded.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]

    cmd = [sys.executable, "-m", "torchbolt.utilities.consolidate_checkpoint", str(sharded)]
    proc = subprocess.run(cmd, env=script_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    output = tmp_path / "sharded.ckpt.consolidated"
    assert output.is_file()

    model = ShardedNet.load_from_checkpoint(output)
    for key, value in saved["weights"].items():
        assert torch.equal(model.state_dict()[key], torch.tensor(value)), key
    checkpoint = torch.load(output, weights_only=False)
    assert checkpoint["global_step"] == saved["step"] == 3
    (optimizer_state,) = checkpoint["optimizer_states"]
    assert optimizer_state["state"]["net.0.weight"]["exp_avg"].shape == (8, 4)  # full size, not a shard

    other = tmp_path / "out" / "model.ckpt"
    proc = subprocess.run([*cmd, "--output_file", str(other)], env=script_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and other.is_file()


def test_consolidate_refuses_a_path_that_is_not_a_sharded_checkpoint(tmp_path: Path) -> None:
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, plain)
    for target in (plain, tmp_path / "missing"):
        proc = subprocess.run([sys.executable, "-m", "torchbolt.utilities.consolidate_checkpoint", str(target)],
                              env=script_env(), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "sharded checkpoint" in proc.stderr.lower()
