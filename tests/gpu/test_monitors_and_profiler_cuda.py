"""CUDA side of the monitors and the PyTorch profiler: memory stats, MFU against the GPU's peak, CUDA kernels."""

from __future__ import annotations

import csv
import glob
import json
import os

import pytest
import torch

from torchbolt import Trainer
from torchbolt.callbacks import DeviceStatsMonitor, ThroughputMonitor
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.loggers import CSVLogger
from torchbolt.profilers import PyTorchProfiler
from torchbolt.utilities.throughput import get_available_flops

pytestmark = pytest.mark.gpu


def _rows(logger: CSVLogger) -> list[dict[str, str]]:
    with open(os.path.join(logger.log_dir, "metrics.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _trainer(tmp_path, **kwargs) -> Trainer:
    return Trainer(accelerator="cuda", devices=1, max_epochs=1, limit_train_batches=8, limit_val_batches=0,
                   log_every_n_steps=2, enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=False, default_root_dir=tmp_path, **kwargs)


def test_device_stats_monitor_logs_cuda_memory_stats(tmp_path):
    logger = CSVLogger(tmp_path)
    _trainer(tmp_path, logger=logger, callbacks=[DeviceStatsMonitor()]).fit(BoringModel())
    rows = _rows(logger)
    key = "DeviceStatsMonitor.on_train_batch_end/allocated_bytes.all.current"
    values = [int(float(r[key])) for r in rows if r.get(key)]
    assert len(values) == 4 and all(v > 0 for v in values)
    assert not any("cpu_percent" in k for k in rows[0])  # CPU stats only when asked on a GPU run


def test_device_stats_monitor_adds_cpu_stats_when_asked(tmp_path):
    pytest.importorskip("psutil", reason="CPU stats need psutil")
    logger = CSVLogger(tmp_path)
    _trainer(tmp_path, logger=logger, callbacks=[DeviceStatsMonitor(cpu_stats=True)]).fit(BoringModel())
    assert "DeviceStatsMonitor.on_train_batch_start/cpu_percent" in _rows(logger)[0]


def test_throughput_monitor_reports_mfu_against_the_gpu_peak(tmp_path):
    peak = get_available_flops(torch.device("cuda", 0), torch.float32)
    if peak is None:
        pytest.skip(f"no peak FLOP/s known for {torch.cuda.get_device_name(0)}")
    logger = CSVLogger(tmp_path)
    monitor = ThroughputMonitor(batch_size_fn=lambda b: b.size(0), window_size=2, flops_per_batch=10**6)
    _trainer(tmp_path, logger=logger, callbacks=[monitor]).fit(BoringModel())
    row = [r for r in _rows(logger) if r.get("train/device/mfu")][-1]
    assert float(row["train/device/mfu"]) == pytest.approx(float(row["train/device/flops_per_sec"]) / peak)


def test_pytorch_profiler_records_cuda_kernels(tmp_path):
    profiler = PyTorchProfiler(dirpath=tmp_path, filename="cuda")
    _trainer(tmp_path, logger=False, profiler=profiler).fit(BoringModel())
    (trace_path,) = glob.glob(str(tmp_path / "fit-cuda-*.pt.trace.json"))
    with open(trace_path) as f:
        events = json.load(f)["traceEvents"]
    assert any(e.get("cat") == "kernel" for e in events)
    assert "cuda_time_total" in profiler._sort_by_key
