"""``accelerator`` and ``devices`` parsing, clear errors without the hardware, and the 1.x spellings."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import torchbolt as pl
from torchbolt.accelerators import CPUAccelerator, CUDAAccelerator, MPSAccelerator, find_usable_cuda_devices
from torchbolt.accelerators.cuda import _parse_gpu_ids
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.imports import module_available

_NO_CUDA = not torch.cuda.is_available()
_NO_MPS = not MPSAccelerator.is_available()


@pytest.mark.parametrize(
    ("devices", "expected"),
    [
        (1, [0]), (2, [0, 1]), (-1, [0, 1, 2, 3]), ("-1", [0, 1, 2, 3]), ("auto", [0, 1, 2, 3]),
        ("2", [0, 1]), ("0,1", [0, 1]), ("1,", [1]), ("0, 3", [0, 3]), ([1, 3], [1, 3]), ((2,), [2]),
        (None, None),
    ],
)
def test_cuda_devices_table(devices: Any, expected: list[int] | None) -> None:
    assert _parse_gpu_ids(devices, available=4) == expected


@pytest.mark.parametrize("devices", [5, [4], "0,7", -2, True, "many", 1.5])
def test_cuda_devices_that_cannot_be_served_are_refused(devices: Any) -> None:
    with pytest.raises(MisconfigurationException):
        _parse_gpu_ids(devices, available=4)


def test_cuda_devices_error_names_the_visible_count() -> None:
    with pytest.raises(MisconfigurationException, match=r"only 2 CUDA device\(s\) are visible"):
        _parse_gpu_ids([0, 3], available=2)


@pytest.mark.parametrize(("devices", "expected"), [(1, 1), (3, 3), ("2", 2), ("auto", 1)])
def test_cpu_devices_table(devices: Any, expected: int) -> None:
    assert CPUAccelerator.parse_devices(devices) == expected


@pytest.mark.parametrize("devices", [0, -1, [0], "0,1", "x"])
def test_cpu_devices_must_be_a_positive_count(devices: Any) -> None:
    with pytest.raises(MisconfigurationException):
        CPUAccelerator.parse_devices(devices)


@pytest.mark.skipif(not _NO_CUDA or not _NO_MPS, reason="this machine has a GPU")
@pytest.mark.parametrize("accelerator", ["auto", "cpu"])
def test_auto_and_cpu_select_the_cpu_here(accelerator: str) -> None:
    trainer = pl.Trainer(accelerator=accelerator, devices=1, max_epochs=1)
    assert isinstance(trainer.accelerator, CPUAccelerator)
    assert trainer.strategy.root_device == torch.device("cpu")


@pytest.mark.skipif(not _NO_CUDA or not _NO_MPS, reason="this machine has a GPU")
def test_gpu_without_a_gpu_is_a_clear_error_at_construction() -> None:
    with pytest.raises(MisconfigurationException, match=r"accelerator='gpu'.*no GPU is available.*accelerator='cpu'"):
        pl.Trainer(accelerator="gpu", max_epochs=1)


@pytest.mark.skipif(not _NO_CUDA, reason="CUDA is available")
def test_cuda_without_cuda_is_a_clear_error_at_construction() -> None:
    with pytest.raises(MisconfigurationException, match=r"CUDA is not available here"):
        pl.Trainer(accelerator="cuda", max_epochs=1)


@pytest.mark.skipif(not _NO_MPS, reason="MPS is available")
def test_mps_without_mps_is_a_clear_error_at_construction() -> None:
    with pytest.raises(MisconfigurationException, match=r"MPS is not available here"):
        pl.Trainer(accelerator="mps", max_epochs=1)


def test_unknown_accelerator_lists_the_choices() -> None:
    with pytest.raises(MisconfigurationException, match=r"accelerator='npu'.*'cpu', 'gpu'"):
        pl.Trainer(accelerator="npu", max_epochs=1)


@pytest.mark.parametrize("devices", [0, "0", []])
def test_zero_devices_is_refused(devices: Any) -> None:
    with pytest.raises(MisconfigurationException, match="selects no device"):
        pl.Trainer(accelerator="cpu", devices=devices, max_epochs=1)


def test_find_usable_cuda_devices_of_zero_is_empty() -> None:
    assert find_usable_cuda_devices(0) == []


@pytest.mark.skipif(not _NO_CUDA, reason="CUDA is available")
def test_find_usable_cuda_devices_without_cuda_raises() -> None:
    with pytest.raises(ValueError, match="only 0 are visible"):
        find_usable_cuda_devices(1)
    assert find_usable_cuda_devices(-1) == []


@pytest.mark.parametrize("benchmark", [True, False])
def test_benchmark_sets_cudnn_benchmark(benchmark: bool) -> None:
    pl.Trainer(accelerator="cpu", benchmark=benchmark, max_epochs=1)
    assert torch.backends.cudnn.benchmark is benchmark


def test_deterministic_turns_cudnn_benchmark_off_unless_asked() -> None:
    torch.backends.cudnn.benchmark = True
    pl.Trainer(accelerator="cpu", deterministic=True, max_epochs=1)
    assert torch.backends.cudnn.benchmark is False


@pytest.mark.skipif(not _NO_CUDA or not _NO_MPS, reason="this machine has a GPU")
def test_legacy_gpus_warns_then_fails_clearly_without_a_gpu() -> None:
    with pytest.deprecated_call(match=r"gpus=1.*accelerator='gpu', devices=N"), pytest.raises(
            MisconfigurationException, match="no GPU is available"):
        pl.Trainer(gpus=1, max_epochs=1)


def test_legacy_gpus_zero_means_cpu() -> None:
    with pytest.deprecated_call(match="gpus=0"):
        trainer = pl.Trainer(gpus=0, max_epochs=1)
    assert isinstance(trainer.accelerator, CPUAccelerator)


def test_legacy_gpus_none_selects_no_gpu() -> None:
    with pytest.deprecated_call(match="gpus=None"):
        trainer = pl.Trainer(gpus=None, accelerator="cpu", max_epochs=1)
    assert isinstance(trainer.accelerator, CPUAccelerator)


@pytest.mark.skipif(module_available("torch_xla"), reason="torch_xla is installed here")
def test_legacy_tpu_cores_warns_then_fails_clearly_without_torch_xla() -> None:
    with pytest.deprecated_call(match="tpu_cores=8"), pytest.raises(MisconfigurationException, match="torch_xla"):
        pl.Trainer(tpu_cores=8, max_epochs=1)


def test_accelerator_instance_is_used_as_given() -> None:
    accelerator = CPUAccelerator()
    trainer = pl.Trainer(accelerator=accelerator, max_epochs=1)
    assert trainer.accelerator is accelerator


@pytest.mark.skipif(not _NO_CUDA, reason="CUDA is available")
def test_cuda_accelerator_reports_itself_unavailable() -> None:
    assert not CUDAAccelerator.is_available()
    assert CUDAAccelerator.auto_device_count() == 0
