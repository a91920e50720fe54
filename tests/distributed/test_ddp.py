"""DDP on CPU with real gloo process groups: one 2-process launch runs every check, each test reads one result."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _launch import free_port, python, run, script_env, torchrun
from common import Regressor, read_results, trainer_kwargs

import torchbolt as pl


@pytest.fixture(scope="module")
def ddp_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp_checks")
    run(python("ddp_checks.py", out), env=script_env(), timeout=280)
    return out


def _single_process_fit(batch_size: int, accumulate: int = 1) -> dict[str, torch.Tensor]:
    pl.seed_everything(7)
    model = Regressor(batch_size=batch_size)
    pl.Trainer(**trainer_kwargs(devices=1, accumulate_grad_batches=accumulate)).fit(model)
    return model.state_dict()


def _assert_weights(actual: dict[str, list], expected: dict[str, torch.Tensor]) -> None:
    assert set(actual) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(torch.tensor(actual[key]), value, rtol=1e-5, atol=1e-6)


def test_ddp_fit_equals_single_process_fit_on_the_doubled_batch(ddp_out: Path) -> None:
    ranks = read_results(str(ddp_out), "fit")
    expected = _single_process_fit(batch_size=8)
    for result in ranks:
        assert result["world_size"] == 2 and result["global_step"] == 4
        _assert_weights(result["final"], expected)


def test_seed_everything_gives_every_rank_the_same_initial_weights(ddp_out: Path) -> None:
    rank0, rank1 = read_results(str(ddp_out), "fit")
    assert rank0["initial"] == rank1["initial"]


def test_distributed_sampler_splits_training_samples_between_ranks(ddp_out: Path) -> None:
    rank0, rank1 = read_results(str(ddp_out), "fit")
    assert rank0["seen"] == [list(range(0, 32, 2))]
    assert rank1["seen"] == [list(range(1, 32, 2))]


def test_ddp_with_accumulation_matches_single_process_and_syncs_only_on_optimizer_steps(ddp_out: Path) -> None:
    ranks = read_results(str(ddp_out), "accumulate")
    expected = _single_process_fit(batch_size=8, accumulate=2)
    for result in ranks:
        _assert_weights(result["final"], expected)
        assert result["global_step"] == 2
        # 4 batches, 2 optimizer steps: the gradient all-reduce ran only on the 2 boundary batches
        assert result["allreduce_calls"] == 2


def test_injected_sampler_keeps_loader_options_and_reshuffles_each_epoch(ddp_out: Path) -> None:
    rank0, rank1 = read_results(str(ddp_out), "shuffle")
    for result in (rank0, rank1):
        assert result["batch_size"] == 3 and result["drop_last"] is True
        assert result["collate"] == "_ListCollate" and result["sampler"] == "DistributedSampler"
        assert result["num_batches"] == 3
    for epoch in range(2):
        a, b = rank0["seen"][epoch], rank1["seen"][epoch]
        assert not set(a) & set(b), "ranks saw the same sample in one epoch"
        assert len(a) == len(b) == 9
    assert rank0["seen"][0] != rank0["seen"][1], "set_epoch did not change the shuffle"


def test_sync_dist_metrics_equal_the_global_reduction(ddp_out: Path) -> None:
    rank0, rank1 = read_results(str(ddp_out), "metrics")
    for result in (rank0, rank1):
        m = result["metrics"]
        assert m["rank_mean"] == pytest.approx(1.5)
        assert m["rank_max"] == pytest.approx(2.0)
        assert m["rank_sum"] == pytest.approx(9.0)  # 3 batches x (1 + 2)
        assert m["rank_step"] == pytest.approx(1.5)
        assert m["tm_sum"] == pytest.approx(9.0)  # torchmetrics synchronizes its state in compute()
    assert rank0["metrics"]["rank_unsynced"] == 1.0 and rank1["metrics"]["rank_unsynced"] == 2.0


def test_evaluation_sees_every_sample_exactly_once(ddp_out: Path) -> None:
    rank0, rank1 = read_results(str(ddp_out), "metrics")
    seen = rank0["val_seen"][0] + rank1["val_seen"][0]
    assert sorted(seen) == list(range(11))
    # the synchronized epoch mean over the 11 samples (0..10), not a padded set
    assert rank0["metrics"]["val_index_mean"] == pytest.approx(5.0)


def test_all_gather_reduce_broadcast_and_rank_zero_only(ddp_out: Path) -> None:
    rank0, rank1 = read_results(str(ddp_out), "collectives")
    for rank, result in enumerate((rank0, rank1)):
        assert result["all_gather"] == [[0, 10], [1, 11]]
        assert result["all_gather_uneven"] == [[0], [0, 1]]
        assert result["reduce_sum"] == 3.0 and result["reduce_mean"] == 1.5 and result["reduce_max"] == 2.0
        assert result["broadcast"] == {"from": 0}
        assert result["any"] is True and result["all"] is False
        assert result["rank_zero_only_rank"] == rank and result["local_rank"] == rank
        assert result["is_global_zero"] is (rank == 0)


def test_progress_bar_shows_on_rank_zero_only(ddp_out: Path) -> None:
    rank0, rank1 = read_results(str(ddp_out), "once")
    assert rank0["progress_bar"] is True and rank1["progress_bar"] is False


def test_prepare_data_runs_once_per_node_and_checkpoints_are_written_by_rank_zero(ddp_out: Path) -> None:
    read_results(str(ddp_out), "once")
    assert len(list(ddp_out.glob("prepare_data.*"))) == 1
    assert (ddp_out / "saved_by_rank0.ckpt").is_file()
    assert not (ddp_out / "saved_by_rank1.ckpt").exists()
    assert torch.load(ddp_out / "shared.ckpt", weights_only=True)["global_step"] == 1


def test_torchrun_runs_the_same_script(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    run(torchrun(2, "ddp_checks.py", tmp_path, "fit"), env=script_env(subprocess_env))
    expected = _single_process_fit(batch_size=8)
    for result in read_results(str(tmp_path), "fit"):
        assert result["env"] == "TorchElasticEnvironment"
        _assert_weights(result["final"], expected)


def test_two_nodes_of_one_process_each_on_localhost(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    import subprocess

    port = free_port()
    procs = []
    for node in (0, 1):
        env = script_env(subprocess_env, NODE_RANK=node, MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                         CHECK_DEVICES=1, CHECK_NODES=2)
        procs.append(subprocess.Popen(python("ddp_checks.py", tmp_path, "fit"), env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    expected = _single_process_fit(batch_size=8)
    for node, result in enumerate(read_results(str(tmp_path), "fit")):
        assert result["node_rank"] == node and result["world_size"] == 2
        _assert_weights(result["final"], expected)
