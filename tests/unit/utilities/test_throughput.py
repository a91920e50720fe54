"""Throughput arithmetic and FLOP counting."""

from __future__ import annotations

import pytest
import torch

from torchbolt.utilities.throughput import Throughput, get_available_flops, measure_flops


def test_rates_need_a_full_window():
    t = Throughput(window_size=3)
    t.update(time=1.0, batches=1, samples=4)
    t.update(time=2.0, batches=2, samples=8)
    assert t.compute() == {"time": 2.0, "batches": 2, "samples": 8}
    t.update(time=3.0, batches=3, samples=12)
    metrics = t.compute()
    assert metrics["device/batches_per_sec"] == pytest.approx(1.0)
    assert metrics["device/samples_per_sec"] == pytest.approx(4.0)


def test_global_rates_flops_and_mfu_with_world_size():
    t = Throughput(available_flops=100.0, world_size=2, window_size=2)
    t.update(time=0.0, batches=0, samples=0, lengths=0, flops=10)
    t.update(time=2.0, batches=4, samples=8, lengths=80, flops=10)
    m = t.compute()
    assert m["device/batches_per_sec"] == 2.0 and m["batches_per_sec"] == 4.0
    assert m["device/items_per_sec"] == pytest.approx(40.0) and m["items_per_sec"] == pytest.approx(80.0)
    assert m["flops_per_sec"] == pytest.approx(10.0)  # 10 flops x 2 devices over 2 s
    assert m["device/flops_per_sec"] == pytest.approx(5.0)
    assert m["device/mfu"] == pytest.approx(0.05)


def test_decreasing_totals_are_rejected():
    t = Throughput()
    t.update(time=2.0, batches=1, samples=1)
    with pytest.raises(ValueError, match="increase"):
        t.update(time=1.0, batches=2, samples=2)


def test_invalid_window_is_rejected():
    with pytest.raises(ValueError, match="window_size"):
        Throughput(window_size=1)


def test_measure_flops_counts_forward_and_backward_on_meta():
    with torch.device("meta"):
        model = torch.nn.Linear(16, 4, bias=False)
        x = torch.randn(8, 16)
    assert measure_flops(model, lambda: model(x)) == 2 * 8 * 16 * 4
    assert measure_flops(model, lambda: model(x), lambda y: y.sum()) == 2 * 2 * 8 * 16 * 4  # no input grad


def test_available_flops_is_unknown_on_cpu():
    assert get_available_flops(torch.device("cpu"), torch.float32) is None
