"""Real Lightning 2.x user scripts, with only the import line changed, keep doing what their users rely on.

Each script under ``user_scripts/`` is written the way the Lightning docs and tutorials write them
(``import torchbolt as pl`` instead of ``import lightning.pytorch as pl``) and dumps what it observed to
``result.json``. Most run in this process through ``runpy`` (as ``__main__``, like ``python script.py``)
to share the import cost; the distributed ones run as real subprocesses.
"""

from __future__ import annotations

import csv
import json
import re
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parent / "user_scripts"


def _run(name: str) -> dict[str, Any]:
    runpy.run_path(str(SCRIPTS / f"{name}.py"), run_name="__main__")
    return json.loads(Path("result.json").read_text())


def _tb_events(log_dir: str) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(log_dir, size_guidance={"images": 0, "histograms": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def test_lit_classifier_keeps_top_k_named_checkpoints_tests_the_best_and_reloads_it() -> None:
    pytest.importorskip("sklearn", reason="the script reads scikit-learn's bundled digits")
    pytest.importorskip("torchmetrics", reason="the script logs torchmetrics.Accuracy objects")
    result = _run("s01_lit_classifier")
    files = result["ckpt_files"]
    assert len(files) == 2 and all(re.fullmatch(r"epoch=\d-val_loss=\d\.\d\d\.ckpt", f) for f in files)
    assert Path(result["best_model_path"]).name == min(files, key=lambda f: float(f[-9:-5]))
    assert Path(result["best_model_path"]).parent == Path(result["log_dir"]) / "checkpoints"
    assert result["hidden_dim"] == 48 and result["lr"] == 0.01  # save_hyperparameters round trip
    (test,) = result["test_results"]
    assert set(test) == {"test_acc", "test_loss"} and test["test_acc"] > 0.8
    assert result["pred_shape"] == [297] and result["n_pred_batches"] == 3 and result["pred_acc"] > 0.8
    assert result["reloaded_matches_best"] and result["reload_training"] is False
    assert result["current_epoch"] == 4 and result["global_step"] == 4 * 19
    with open(Path(result["log_dir"]) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"train_acc_step", "train_acc_epoch", "val_acc", "val_loss", "lr-Adam", "test_acc"} <= set(rows[0])
    assert len([r for r in rows if r["val_acc"]]) == 4  # one per epoch, no sanity-check row
    assert "hidden_dim: 48" in (Path(result["log_dir"]) / "hparams.yaml").read_text()


def test_datamodule_log_dict_outputs_on_self_and_two_loggers() -> None:
    result = _run("s02_datamodule_two_loggers")
    assert result["dm_calls"] == ["prepare_data", "setup:fit", "prepare_data", "setup:test"]
    assert result["epoch_end_sizes"] == [64, 64, 64, 64]  # sanity check (2 batches) + 3 epochs, list cleared
    metrics = result["fit_callback_metrics"]
    assert {"val_loss", "val_mae", "val_pred_mean", "train_loss", "train_loss_step", "train_loss_epoch"} == set(metrics)
    assert metrics["train_loss"] == metrics["train_loss_epoch"]
    assert result["logged_metrics"] == ["train_loss_epoch", "train_loss_step", "val_loss", "val_mae", "val_pred_mean"]
    # the test set is the validation set: same weights, same loss
    assert result["test"][0]["test_loss"] == pytest.approx(metrics["val_loss"], rel=1e-6)
    assert result["loggers"] == ["CSVLogger", "TensorBoardLogger"]
    assert result["logger_log_dir"] == "logs/csv/version_0"  # the first logger names the run
    assert list(Path("logs/csv/version_0/checkpoints").glob("epoch=2-step=24.ckpt"))
    events = _tb_events(result["tb_log_dir"])
    assert {"val_loss", "val_mae", "train_loss_step", "train_loss_epoch", "test_loss"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("val_loss")] == [7, 15, 23]
    assert "val_mae" in Path("logs/csv/version_0/metrics.csv").read_text().splitlines()[0]


def test_manual_optimization_gan_counts_every_optimizer_step() -> None:
    result = _run("s03_manual_gan")
    assert result["g_steps"] == 12 and result["d_steps"] == 6
    assert result["global_step"] == 18  # each optimizer.step() is a global step in manual optimization
    assert result["lrs"] == [pytest.approx(2e-3 * 0.25)] * 2  # the schedulers stepped once per epoch
    assert result["callback_metrics"] == ["d_loss", "g_loss"]
    assert [Path(p).name for p in result["ckpts"]] == ["epoch=1-step=18.ckpt"]


def test_accumulation_sizes_onecycle_and_seeded_runs_are_identical() -> None:
    result = _run("s04_clip_accumulate_onecycle")
    assert result["estimated_stepping_batches"] == 15 == result["global_step"]  # 3 epochs * 20 batches / 4
    assert result["scheduler_steps"] == 15  # OneCycleLR(total_steps) stepped exactly to its end
    assert result["same_weights"] and result["deterministic"]


def test_debug_flags_run_the_documented_number_of_batches() -> None:
    result = _run("s05_debug_flags")
    fdr = result["fast_dev_run"]
    assert (fdr["train_batches"], fdr["val_batches"], fdr["global_step"]) == (1, 1, 1)
    assert result["fast_dev_run_3"]["val_at_steps"] == [3]
    assert result["files"] == []  # fast_dev_run writes no logs and no checkpoints
    overfit = result["overfit"]
    assert overfit["num_training_batches"] == 2 and overfit["distinct_train_samples"] == 20  # no shuffling
    assert overfit["val_batches"] == 2 + 3 * 2
    limits = result["limits"]
    assert (limits["num_training_batches"], limits["num_val_batches"], limits["val_at_steps"]) == (5, [2], [5, 10])
    assert result["half_epoch_val"]["val_at_steps"] == [5, 10, 15, 20]
    assert result["every_2_epochs"]["val_at_steps"] == [20, 40]
    assert result["val_every_3_steps"]["val_at_steps"] == [3, 6]


def test_custom_callback_rank_zero_only_and_model_summary() -> None:
    result = _run("s06_custom_callback_utilities")
    losses = [f"val_loss={h['val_loss']:.4f}" for h in result["history"]]
    assert result["events"] == ["train_start", losses[0], "too:epoch_end:0", losses[1], "too:epoch_end:1"]
    assert all(set(h) == {"train_loss", "val_loss"} for h in result["history"])
    assert [f["step"] for f in result["facts"]] == [0, 4] and [f["epoch"] for f in result["facts"]] == [0, 1]
    assert all(f["device"] == "cpu" and f["zero"] and f["global_rank"] == 0 for f in result["facts"])
    assert result["total_parameters"] == 127 == result["trainable_parameters"]
    lines = result["summary_str"].splitlines()
    assert "In sizes" in lines[0] and any("encoder.0" in line and "[2, 6]" in line for line in lines)
    assert "PrintMetrics" in result["callback_state_keys"]
    assert {"state_dict", "optimizer_states", "callbacks", "epoch", "global_step", "loops"} <= set(result["ckpt_keys"])


def test_tuner_sets_the_suggested_lr_and_the_largest_batch_size() -> None:
    pytest.importorskip("matplotlib", reason="the script plots the learning-rate curve")
    result = _run("s07_tuner")
    assert result["suggestion"] == result["model_lr"] == result["hparams_lr"] == result["optimizer_lr"]
    assert result["results_keys"] == ["loss", "lr"] and result["n_points"] == 30
    # 4 trials from 4: 4, 8, 16, 32 (no untried doubling after the last trial, as in Lightning 2.6)
    assert result["new_batch_size"] == 32 == result["model_batch_size"]
    assert result["global_step"] == 8  # the real fit, 256 samples at batch size 32, restarted from zero
    assert result["leftover"] == ["lr.png"]  # the tuners remove their temporary checkpoints


def test_checkpoint_reload_and_torchscript_and_onnx_export() -> None:
    onnx = pytest.importorskip("onnx", reason="the script exports with LightningModule.to_onnx")
    result = _run("s08_export")
    onnx.checker.check_model(onnx.load("model.onnx"))
    assert result["width"] == 12
    assert result["script_close"] and result["trace_close"]
    assert result["manual_same"] and result["original_same"]
    assert Path("model_trace.pt").exists() and result["restored_device"] == "cpu"


def test_logger_experiment_is_a_summary_writer() -> None:
    result = _run("s09_tensorboard_experiment")
    assert result["log_dir"] == "tb_logs/my_model/version_0" and result["root_dir"] == "tb_logs/my_model"
    tags = _tb_events(result["log_dir"]).Tags()
    assert {"inputs", "batch"} <= set(tags["images"])
    assert {"conv.weight", "conv.bias", "fc.weight", "fc.bias"} <= set(tags["histograms"])
    assert tags["graph"]  # log_graph=True with example_input_array
    assert {"train/loss", "hp_metric", "epoch"} <= set(tags["scalars"])


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp"])
def test_two_cpu_processes_train_checkpoint_and_report_back(strategy: str, subprocess_env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPTS / "s10_ddp_spawn_cpu.py"), strategy], env=subprocess_env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(Path("result.json").read_text())
    assert result["world_size"] == 2 and result["strategy"] == "DDPStrategy"
    assert result["global_step"] == 8  # 64 samples / 2 ranks / batch 8 = 4 steps per epoch
    assert result["weights_changed"] and result["reloaded_equals_trained"]
    assert re.fullmatch(r"epoch=\d-val_loss=\d\.\d{3}\.ckpt", Path(result["best_model_path"]).name)
    assert result["callback_metrics"]["rank_seen"] == 4.0  # (0 + 1) summed over ranks, then over 4 batches
    assert proc.stdout.count("world_size=2") == 1  # self.print on global zero only


def test_early_stopping_resume_from_last_test_without_model_and_prediction_writer() -> None:
    result = _run("s11_resume_early_stop_writer")
    assert result["first_fit"] == {"stopped_epoch": 2, "wait_count": 2, "current_epoch": 3, "should_stop": True}
    assert result["resumed_epoch"] == 4 and result["resumed_global_step"] == 16  # 2 epochs + 2 resumed, 4 batches
    assert result["ckpts"] == ["epoch=3-step=16.ckpt", "last.ckpt"]
    # test() after fit without a model: the best checkpoint, one warning saying so, no callback-state noise
    assert result["test_ckpt_path"] == result["best_model_path"]
    # (torch's own note that `pin_memory=True`, which `from_datasets` sets as Lightning does, has no effect
    # without an accelerator is not ours)
    (warning,) = [w for w in result["test_warnings"] if "pin_memory" not in w]
    assert warning.startswith("`.test(ckpt_path=None)` was called without a model.")
    assert set(result["test"][0]) == {"test_loss"}
    assert result["override_lr"] == 0.5  # load_from_checkpoint(**kwargs) overrides saved hparams
    assert result["predict_returned"] is None and result["n_pred_batches"] == 4
    assert result["batch_indices"] == [[list(range(i, i + 10)) for i in range(0, 40, 10)]]


def test_bf16_cpu_with_rich_swa_finetuning_accumulation_schedule_and_metric_collection() -> None:
    pytest.importorskip("rich", reason="the script uses RichProgressBar and RichModelSummary")
    pytest.importorskip("torchmetrics", reason="the script logs a torchmetrics MetricCollection")
    result = _run("s13_callbacks_zoo_bf16")
    assert result["dtypes"] == ["torch.bfloat16"] and result["precision"] == "bf16-mixed"
    assert result["global_step"] == 12 + 12 + 6 + 6  # accumulate 1 for epochs 0-1, then 2
    assert result["backbone_trainable_after_fit"] and result["n_param_groups"] == 2  # unfrozen at epoch 1
    assert result["backbone_frozen_by_validate_setup"]  # BaseFinetuning.setup freezes for every stage
    assert result["validated_keys"] == ["val/acc", "val/f1"]
    assert 0 < result["timer_train_s"] < 60
    assert "hparams.yaml" in result["files"] and "checkpoints" in result["files"]


def test_lightning_1x_script_runs_with_deprecation_warnings() -> None:
    result = _run("s12_lightning_1x_style")
    assert result["warnings"] == ["Trainer(auto_lr_find=True)", "Trainer(checkpoint_callback=True)",
                                  "Trainer(gpus=0)", "Trainer(progress_bar_refresh_rate=20)",
                                  "Trainer(weights_summary=None)", "trainer.tune()"]
    assert result["tuned_keys"] == ["lr_find"] and result["lr_changed"] and result["optimizer_lr_is_model_lr"]
    assert result["accelerator"] == "CPUAccelerator" and result["global_step"] == 16
    assert result["has_checkpoint"] and result["refresh_rate"] == 20
    assert torch.isfinite(torch.tensor(result["val_loss"]))
