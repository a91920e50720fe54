"""DeviceStatsMonitor and ThroughputMonitor: the metrics they send to the loggers, read back from metrics.csv."""

from __future__ import annotations

import csv
import os

import pytest
import torch

from torchbolt import Trainer
from torchbolt.callbacks import DeviceStatsMonitor, ThroughputMonitor
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.loggers import CSVLogger
from torchbolt.utilities.exceptions import MisconfigurationException


def _rows(logger: CSVLogger) -> list[dict[str, str]]:
    with open(os.path.join(logger.log_dir, "metrics.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _fit(tmp_path, callbacks, model=None, **kwargs):
    logger = CSVLogger(tmp_path)
    defaults = dict(logger=logger, callbacks=callbacks, max_epochs=1, limit_train_batches=6, limit_val_batches=0,
                    log_every_n_steps=2, enable_progress_bar=False, enable_model_summary=False,
                    enable_checkpointing=False, default_root_dir=tmp_path)
    defaults.update(kwargs)
    trainer = Trainer(**defaults)
    trainer.fit(model or BoringModel())
    return trainer, logger


def test_device_stats_monitor_logs_cpu_stats_on_logging_steps(tmp_path):
    pytest.importorskip("psutil", reason="CPU stats need psutil")
    _, logger = _fit(tmp_path, [DeviceStatsMonitor()])
    rows = _rows(logger)
    key = "DeviceStatsMonitor.on_train_batch_end/cpu_percent"
    logged = [(r["step"], float(r[key])) for r in rows if r.get(key)]
    assert [step for step, _ in logged] == ["1", "3", "5"]
    assert all(0.0 <= value <= 100.0 * os.cpu_count() for _, value in logged)
    assert {"DeviceStatsMonitor.on_train_batch_start/cpu_vm_percent",
            "DeviceStatsMonitor.on_train_batch_end/cpu_swap_percent"} <= set(rows[0])


def test_device_stats_monitor_logs_validation_and_test_batches(tmp_path):
    pytest.importorskip("psutil", reason="CPU stats need psutil")
    trainer, logger = _fit(tmp_path, [DeviceStatsMonitor()], limit_train_batches=2, limit_val_batches=2,
                           limit_test_batches=1, log_every_n_steps=1, num_sanity_val_steps=0)
    fit_keys = set(_rows(logger)[0])
    assert "DeviceStatsMonitor.on_validation_batch_start/cpu_percent" in fit_keys
    assert "DeviceStatsMonitor.on_validation_batch_end/cpu_percent" in fit_keys
    trainer.test(BoringModel())
    test_keys = set(_rows(logger)[0])
    assert {"DeviceStatsMonitor.on_test_batch_start/cpu_percent",
            "DeviceStatsMonitor.on_test_batch_end/cpu_percent"} <= test_keys


def test_device_stats_monitor_cpu_stats_false_logs_nothing_on_cpu(tmp_path):
    _, logger = _fit(tmp_path, [DeviceStatsMonitor(cpu_stats=False)])
    assert not os.path.exists(os.path.join(logger.log_dir, "metrics.csv"))


def test_device_stats_monitor_needs_a_logger(tmp_path):
    trainer = Trainer(logger=False, callbacks=[DeviceStatsMonitor()], max_steps=1, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)
    with pytest.raises(MisconfigurationException, match="logger=False"):
        trainer.fit(BoringModel())


def test_throughput_monitor_logs_rates_after_the_window(tmp_path):
    monitor = ThroughputMonitor(batch_size_fn=lambda batch: batch.size(0), window_size=2, flops_per_batch=1000,
                                available_flops=1e9)
    _, logger = _fit(tmp_path, [monitor])
    rows = [r for r in _rows(logger) if r.get("train/batches")]
    assert [(r["step"], r["train/batches"], r["train/samples"]) for r in rows] == [
        ("1", "2", "2"), ("3", "4", "4"), ("5", "6", "6")]
    for r in rows:
        batches_per_sec = float(r["train/device/batches_per_sec"])
        assert batches_per_sec > 0
        assert float(r["train/device/samples_per_sec"]) == pytest.approx(batches_per_sec)  # batch size 1
        assert float(r["train/device/flops_per_sec"]) == pytest.approx(1000 * batches_per_sec)
        assert float(r["train/device/mfu"]) == pytest.approx(1000 * batches_per_sec / 1e9)
    times = [float(r["train/time"]) for r in rows]
    assert times == sorted(times)


def test_throughput_monitor_reads_flops_per_batch_from_the_module_and_length_fn(tmp_path):
    class Model(BoringModel):
        flops_per_batch = 500

    monitor = ThroughputMonitor(batch_size_fn=lambda b: b.size(0), length_fn=lambda b: 3 * b.size(0), window_size=2)
    _, logger = _fit(tmp_path, [monitor], model=Model())
    row = [r for r in _rows(logger) if r.get("train/batches")][-1]
    assert row["train/lengths"] == "18"
    assert float(row["train/device/items_per_sec"]) == pytest.approx(3 * float(row["train/device/samples_per_sec"]))
    assert float(row["train/device/flops_per_sec"]) == pytest.approx(500 * float(row["train/device/batches_per_sec"]))
    assert "train/device/mfu" not in row or row["train/device/mfu"] == ""  # no known peak on the CPU


def test_throughput_monitor_measures_validation_and_test(tmp_path):
    monitor = ThroughputMonitor(batch_size_fn=lambda b: b.size(0), window_size=2, flops_per_batch=1)
    trainer, logger = _fit(tmp_path, [monitor], limit_val_batches=4, limit_test_batches=4)
    trainer.test(BoringModel(), verbose=False)
    rows = _rows(logger)
    assert [r["validate/batches"] for r in rows if r.get("validate/batches")] == ["2", "4"]
    assert [r["test/batches"] for r in rows if r.get("test/batches")] == ["2", "4"]


def test_throughput_monitor_warns_without_flops(tmp_path):
    monitor = ThroughputMonitor(batch_size_fn=lambda b: b.size(0), window_size=2)
    with pytest.warns(UserWarning, match="flops_per_batch"):
        _fit(tmp_path, [monitor])


def test_measured_flops_feed_the_monitor(tmp_path):
    from torchbolt.utilities import measure_flops

    class Model(BoringModel):
        def setup(self, stage):
            with torch.device("meta"):
                net = torch.nn.Linear(32, 2)
                x = torch.randn(1, 32)
            self.flops_per_batch = measure_flops(net, lambda: net(x), lambda y: y.sum())

    monitor = ThroughputMonitor(batch_size_fn=lambda b: b.size(0), window_size=2)
    trainer, logger = _fit(tmp_path, [monitor], model=Model())
    # forward matmul + weight-gradient matmul (the input needs no gradient): 2 x (2 * 1 * 32 * 2)
    assert trainer.lightning_module.flops_per_batch == 256
    row = [r for r in _rows(logger) if r.get("train/device/flops_per_sec")][-1]
    assert float(row["train/device/flops_per_sec"]) > 0
