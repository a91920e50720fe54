"""Recognizing out-of-memory errors and releasing cached device memory (used by the batch-size finder)."""

from __future__ import annotations

import gc
from typing import Any

import torch


def is_oom_error(exception: BaseException) -> bool:
    """Whether ``exception`` means the device or the host ran out of memory.

    Recognizes ``torch.OutOfMemoryError`` (CUDA and other accelerators), the ``RuntimeError`` messages of
    CUDA and cuDNN allocation failures, and the CPU allocator's "can't allocate memory" error.

    Example::

        try:
            run_step()
        except RuntimeError as err:
            if not is_oom_error(err):
                raise
    """
    return (
        is_cuda_out_of_memory(exception) or is_cudnn_snafu(exception) or is_out_of_cpu_memory(exception)
    )


def _message(exception: BaseException) -> str:
    return str(exception.args[0]) if exception.args else ""


def is_cuda_out_of_memory(exception: BaseException) -> bool:
    """``torch.OutOfMemoryError``, or a ``RuntimeError`` saying "CUDA ... out of memory"."""
    if isinstance(exception, torch.OutOfMemoryError):
        return True
    message = _message(exception)
    return isinstance(exception, RuntimeError) and "CUDA" in message and "out of memory" in message


def is_cudnn_snafu(exception: BaseException) -> bool:
    """cuDNN reports some out-of-memory conditions as an unsupported configuration."""
    return isinstance(exception, RuntimeError) and "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED." in _message(exception)


def is_out_of_cpu_memory(exception: BaseException) -> bool:
    """The CPU allocator's failure (``DefaultCPUAllocator: can't allocate memory``)."""
    return isinstance(exception, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in _message(
        exception
    )


def garbage_collection_cuda() -> None:
    """Collect Python garbage and return cached CUDA blocks to the driver (no-op for CUDA without CUDA)."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        try:
            torch.cuda.empty_cache()
        except RuntimeError as exception:
            # emptying the cache can itself fail when memory is exhausted; that is not worth failing for
            if not is_oom_error(exception):
                raise


def recursive_detach(in_dict: Any, to_cpu: bool = False) -> Any:
    """A copy of a (nested) collection with every tensor detached, and moved to the CPU when ``to_cpu``.

    Anything that is not a tensor is kept as it is.
    """
    from torchbolt.utilities.apply_func import apply_to_collection

    def detach(tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach()
        return tensor.cpu() if to_cpu else tensor

    return apply_to_collection(in_dict, torch.Tensor, detach)
