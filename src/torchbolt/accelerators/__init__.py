"""Accelerators: which kind of device a run uses."""

from torchbolt.accelerators.accelerator import Accelerator
from torchbolt.accelerators.cpu import CPUAccelerator
from torchbolt.accelerators.cuda import CUDAAccelerator, find_usable_cuda_devices
from torchbolt.accelerators.mps import MPSAccelerator
from torchbolt.accelerators.xla import XLAAccelerator

__all__ = [
    "Accelerator", "CPUAccelerator", "CUDAAccelerator", "MPSAccelerator", "XLAAccelerator", "find_usable_cuda_devices",
]
