"""The experimental TPU path, tested against a stand-in ``torch_xla`` that follows its documented API
(``torch_xla.runtime.addressable_device_count``, ``torch_xla.core.xla_model.mark_step`` /
``reduce_gradients``): no TPU or torch_xla build exists for this machine."""

from __future__ import annotations

import importlib.machinery
import os
import sys
import types
from typing import Any

import pytest
import torch
from torch import nn

import torchbolt as pl
from torchbolt.accelerators import XLAAccelerator
from torchbolt.plugins.precision import XLAPrecision
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.imports import module_available


def _module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    return module


@pytest.fixture
def fake_xla(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Install a stand-in torch_xla with 4 devices; returns the list its functions record calls in."""
    calls: list[str] = []
    root, core, xm, runtime = (_module(n) for n in (
        "torch_xla", "torch_xla.core", "torch_xla.core.xla_model", "torch_xla.runtime"))
    runtime.addressable_device_count = lambda: 4  # type: ignore[attr-defined]
    xm.mark_step = lambda: calls.append("mark_step")  # type: ignore[attr-defined]
    xm.reduce_gradients = lambda optimizer: calls.append("reduce_gradients")  # type: ignore[attr-defined]
    xm.get_memory_info = lambda device: {"bytes_used": 2**20, "bytes_limit": 2**30}  # type: ignore[attr-defined]
    root.core, root.runtime, core.xla_model = core, runtime, xm  # type: ignore[attr-defined]
    for module in (root, core, xm, runtime):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.delenv("XLA_USE_BF16", raising=False)
    monkeypatch.delenv("XLA_USE_F16", raising=False)
    return calls


@pytest.mark.parametrize(("devices", "expected"), [(1, [0]), ("1", [0]), ("auto", [0]), ([2], [2]), ("[3]", [3])])
def test_tpu_devices_parse_to_one_index(fake_xla: Any, devices: Any, expected: list[int]) -> None:
    assert XLAAccelerator.parse_devices(devices) == expected
    assert XLAAccelerator.get_parallel_devices(devices) == [torch.device("xla", expected[0])]


@pytest.mark.parametrize("devices", [8, "8"])
def test_several_tpu_cores_are_refused_with_the_reason(fake_xla: Any, devices: Any) -> None:
    with pytest.raises(MisconfigurationException, match="multi-core TPU training needs an XLA launcher"):
        XLAAccelerator.parse_devices(devices)


@pytest.mark.parametrize("devices", [[7], [0, 1], 0, "x", True])
def test_invalid_tpu_devices_are_refused(fake_xla: Any, devices: Any) -> None:
    with pytest.raises(MisconfigurationException):
        XLAAccelerator.parse_devices(devices)


def test_stand_in_makes_xla_available_and_reports_memory(fake_xla: Any) -> None:
    assert XLAAccelerator.is_available() and XLAAccelerator.auto_device_count() == 4
    assert XLAAccelerator().get_device_stats("xla:0") == {"memory used (MB)": 1.0, "memory limit (MB)": 1024.0}


def test_trainer_on_tpu_uses_a_single_xla_device_and_the_xla_precision(fake_xla: Any) -> None:
    trainer = pl.Trainer(accelerator="tpu", devices=1, max_epochs=1, logger=False)
    assert isinstance(trainer.accelerator, XLAAccelerator)
    assert trainer.strategy.root_device == torch.device("xla", 0)
    assert isinstance(trainer.precision_plugin, XLAPrecision) and trainer.precision == "32-true"


def test_bf16_true_on_tpu_sets_and_removes_the_xla_flag(fake_xla: Any) -> None:
    plugin = pl.Trainer(accelerator="tpu", devices=1, precision="bf16-true", max_epochs=1).precision_plugin
    assert os.environ.get("XLA_USE_BF16") == "1"
    plugin.teardown()
    assert "XLA_USE_BF16" not in os.environ


def test_mixed_precision_on_tpu_falls_back_to_the_true_variant(fake_xla: Any) -> None:
    with pytest.warns(UserWarning, match="precision='bf16-true'. is used instead"):
        trainer = pl.Trainer(accelerator="tpu", devices=1, precision="bf16-mixed", max_epochs=1)
    assert trainer.precision == "bf16-true"
    trainer.precision_plugin.teardown()


def test_legacy_tpu_cores_maps_to_the_tpu_accelerator(fake_xla: Any) -> None:
    with pytest.deprecated_call(match="tpu_cores"):
        trainer = pl.Trainer(tpu_cores=1, max_epochs=1)
    assert isinstance(trainer.accelerator, XLAAccelerator)


def test_xla_optimizer_step_reduces_gradients_runs_hooks_then_marks_the_step(fake_xla: list[str]) -> None:
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def closure() -> torch.Tensor:
        fake_xla.append("closure")
        loss = model(torch.ones(1, 2)).sum()
        loss.backward()
        return loss

    XLAPrecision().optimizer_step(optimizer, closure, lambda opt: fake_xla.append("hooks"))
    assert fake_xla == ["closure", "reduce_gradients", "hooks", "mark_step"]


@pytest.mark.skipif(module_available("torch_xla"), reason="torch_xla is installed here")
def test_without_torch_xla_tpu_is_a_clear_error() -> None:
    with pytest.raises(MisconfigurationException, match="torch_xla"):
        pl.Trainer(accelerator="tpu", max_epochs=1)
    with pytest.raises(ModuleNotFoundError, match="torch_xla"):
        XLAPrecision()
