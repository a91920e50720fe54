"""``AsyncCheckpointIO``: checkpoint files written on a background thread while training goes on.

The training step pays only for copying the checkpoint's tensors to host memory; serializing,
writing, ``fsync`` and the atomic rename of the wrapped plug-in run on one background thread.
"""

from __future__ import annotations

import atexit
import copy
import logging
import os
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from torchbolt.plugins.io.checkpoint_io import _PATH, CheckpointIO
from torchbolt.plugins.io.torch_io import TorchCheckpointIO

log = logging.getLogger(__name__)

# values that are immutable, so a snapshot can share them with the live checkpoint
_IMMUTABLE = (str, bytes, int, float, complex, bool, type(None), torch.dtype, torch.device, torch.Size, range)


@dataclass
class _Failure:
    """The first error of a background operation, kept until it is raised."""

    error: BaseException
    path: str
    action: str  # "write", "remove" or "link"

    def exception(self) -> BaseException:
        """The exception to raise in the training thread: it names the file and keeps the cause."""
        error = self.error
        if self.path in str(error):
            return error  # already names the file (e.g. TorchCheckpointIO's disk-full message)
        what = {"write": "Writing the checkpoint", "remove": "Removing the checkpoint",
                "link": "Linking the checkpoint"}[self.action]
        message = (f"{what} {self.path} in the background failed ({type(error).__name__}: {error}). Files written"
                   " before it were left as they were.")
        if isinstance(error, OSError) and error.errno is not None:
            return OSError(error.errno, message)  # the errno keeps the class (PermissionError, ...)
        return RuntimeError(message)


class AsyncCheckpointIO(CheckpointIO):
    """Writes checkpoints on a background thread; the training step only waits for a host copy.

    Wraps another plug-in (default :class:`TorchCheckpointIO`, whose writes are atomic).
    ``save_checkpoint`` copies every tensor of the checkpoint to host memory (tensors on a CUDA
    device go to reused pinned buffers, with asynchronous copies the writer thread waits for), so
    training may change the parameters as soon as it returns; the wrapped plug-in then serializes
    and writes that copy on the writer thread.

    Contract:

    - At most one save is in flight: ``save_checkpoint`` first waits for the previous one.
    - Operations run in call order. ``remove_checkpoint`` runs after the writes queued before it,
      and not at all when one of them failed, so a file that a new checkpoint supersedes is removed
      only once the new one is complete.
    - An error of a background operation is raised, naming the file, by the next
      ``save_checkpoint``, ``load_checkpoint``, :meth:`wait` or ``teardown`` (the end of ``fit``).
      Operations queued after a failed one are skipped.
    - ``load_checkpoint`` and ``teardown`` first wait for every queued operation, so ``fit``
      returns only once its last checkpoint is on disk. After ``teardown`` (and until the strategy
      starts its next run) saves are synchronous, so ``trainer.save_checkpoint`` after ``fit``
      returns with the file complete. Writes still in flight when the interpreter exits normally
      are completed first; an error among them is printed to stderr.
    - A process killed during a background write loses that checkpoint only: the wrapped
      plug-in's atomic write leaves the previous files complete and loadable.
    - Tensors are saved as CPU tensors (load them with any ``map_location``).

    With the default :class:`TorchCheckpointIO` the host buffers are kept between saves (one copy
    of the checkpoint's tensors; released at ``teardown``): refilling them is several times
    faster than allocating new memory. Another wrapped plug-in gets fresh buffers for every save,
    as it may keep references to the tensors after ``save_checkpoint`` returns.

    Args:
        checkpoint_io: the plug-in that writes the files (default: the strategy's, else
            :class:`TorchCheckpointIO`).

    Raises:
        TypeError: ``checkpoint_io`` is not a ``CheckpointIO``, or is itself an ``AsyncCheckpointIO``.

    Example::

        trainer = Trainer(plugins=[AsyncCheckpointIO()])
        # or, for the checkpoints of one callback and every other write of that trainer:
        trainer = Trainer(callbacks=[ModelCheckpoint(every_n_train_steps=500, async_save=True)])
    """

    _RUNTIME = ("_lock", "_executor", "_futures", "_expected", "_ops", "_failure", "_buffers", "_active", "_pid")

    def __init__(self, checkpoint_io: CheckpointIO | None = None) -> None:
        _check_wrapped(checkpoint_io)
        self._checkpoint_io = checkpoint_io
        self._reset()
        _register(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._futures: list[Future[None]] = []
        # normalized path -> (operation number, whether the file exists once it ran), for queued operations
        self._expected: dict[str, tuple[int, bool]] = {}
        self._ops = 0
        self._failure: _Failure | None = None
        self._buffers: list[tuple[Tensor, bool]] = []  # (byte buffer, pinned), reused in snapshot order
        self._active = True
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        # threads, locks and buffers stay in this process; a copy starts idle
        return {k: v for k, v in self.__dict__.items() if k not in self._RUNTIME}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()
        _register(self)

    # ------------------------------------------------------------------ the wrapped plug-in
    @property
    def checkpoint_io(self) -> CheckpointIO:
        """The plug-in that writes, reads and removes the files (created as ``TorchCheckpointIO`` when unset)."""
        if self._checkpoint_io is None:
            self._checkpoint_io = TorchCheckpointIO()
        return self._checkpoint_io

    @checkpoint_io.setter
    def checkpoint_io(self, io: CheckpointIO) -> None:
        _check_wrapped(io)
        self.wait()
        self._checkpoint_io = io

    @property
    def _requires_default(self) -> bool:
        return self._checkpoint_io is None

    # ------------------------------------------------------------------ CheckpointIO
    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        """Copy the tensors of ``checkpoint`` to host memory and write it to ``path`` in the background.

        Waits first for the previous save. Returns before the file exists; it exists, complete, once
        :meth:`wait` or ``teardown`` returned.

        Raises:
            OSError, RuntimeError: a previous background operation failed (the message names its file).
            TypeError: ``storage_options`` were given and the wrapped plug-in is ``TorchCheckpointIO``.
        """
        self.wait()
        io = self.checkpoint_io
        if not self._active:
            io.save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        # the default writer: known to take no storage options, and not to keep the tensors after it
        # returns (so the host buffers can be refilled by the next save)
        default_writer = isinstance(io, TorchCheckpointIO) and (
            type(io).save_checkpoint is TorchCheckpointIO.save_checkpoint)
        if storage_options is not None and default_writer:
            # now, not at the next save
            raise TypeError(
                "`Trainer.save_checkpoint(..., storage_options=...)` is not supported by `TorchCheckpointIO`; pass"
                " a custom `CheckpointIO` plug-in that accepts them, e.g. `AsyncCheckpointIO(MyCheckpointIO())`."
            )
        reuse = default_writer
        snapshot, ready = _Snapshot(self._buffers if reuse else None).take(checkpoint)

        def write() -> None:
            for event in ready:  # the device-to-host copies were only queued
                event.synchronize()
            io.save_checkpoint(snapshot, path, storage_options=storage_options)

        self._submit(write, path, "write", exists_after=True)

    def load_checkpoint(self, path: _PATH, map_location: Any | None = None, weights_only: bool | None = None
                        ) -> dict[str, Any]:
        """Wait for the queued operations, then read ``path`` with the wrapped plug-in.

        Raises:
            OSError, RuntimeError: a background operation failed (the message names its file).
        """
        self.wait()
        return self.checkpoint_io.load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path: _PATH) -> None:
        """Delete ``path`` now when nothing is queued, else after the queued writes (skipped if one failed)."""
        self._after_writes(lambda: self.checkpoint_io.remove_checkpoint(path), path, "remove", exists_after=False)

    def teardown(self) -> None:
        """Wait for every queued operation, stop the writer thread and release the host buffers.

        Saves are synchronous afterwards, until the strategy starts its next run.

        Raises:
            OSError, RuntimeError: a background operation failed (the message names its file).
        """
        self._close()
        self._raise_failure()

    def wait(self) -> None:
        """Block until every queued write and removal has finished.

        Raises:
            OSError, RuntimeError: the first error of a background operation (the message names its
                file); it is raised once.
        """
        self._drain()
        self._raise_failure()

    # ------------------------------------------------------------------ used by the strategy and callbacks
    def _start(self) -> None:
        """A run begins: saves are asynchronous again (after the previous run's ``teardown``)."""
        self._check_fork()
        self._active = True

    def _close(self, report_only: bool = False) -> None:
        """``teardown`` without raising; with ``report_only`` a background error is logged and dropped
        (the run already failed with another exception, which must not be replaced)."""
        self._drain()
        self._active = False
        with self._lock:
            executor, self._executor = self._executor, None
            self._buffers = []
        if executor is not None:
            executor.shutdown(wait=True)
        if self._checkpoint_io is not None:
            self._checkpoint_io.teardown()
        if report_only:
            with self._lock:
                failure, self._failure = self._failure, None
            if failure is not None:
                log.error(str(failure.exception()))

    def _pending_state(self, path: _PATH) -> bool | None:
        """Whether ``path`` will exist once the queued operations ran; ``None`` when none concerns it."""
        with self._lock:
            entry = self._expected.get(_normalize(path))
        return None if entry is None else entry[1]

    def _after_writes(self, job: Callable[[], None], path: _PATH, action: str, exists_after: bool) -> None:
        """Run ``job`` (a change to ``path``) after the queued operations: now when there are none,
        else on the writer thread, skipped when one of them failed."""
        self._check_fork()
        with self._lock:
            busy = self._failure is not None or any(not f.done() for f in self._futures)
        if busy and self._active:
            self._submit(job, path, action, exists_after)
        else:
            job()

    # ------------------------------------------------------------------ the writer thread
    def _submit(self, job: Callable[[], None], path: _PATH, action: str, exists_after: bool) -> None:
        key = _normalize(path)
        with self._lock:
            self._ops += 1
            op = self._ops
            self._expected[key] = (op, exists_after)
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="torchbolt-checkpoint-writer")
            self._futures.append(self._executor.submit(self._run, job, op, key, str(path), action))

    def _run(self, job: Callable[[], None], op: int, key: str, path: str, action: str) -> None:
        """One queued operation, on the writer thread; it never raises (the error is kept for later)."""
        try:
            if self._failure is None:  # after a failure the queued operations depended on it: skip them
                job()
        except BaseException as error:  # re-raised in the training thread
            with self._lock:
                if self._failure is None:
                    self._failure = _Failure(error, path, action)
        finally:
            with self._lock:
                if self._expected.get(key, (None,))[0] == op:
                    del self._expected[key]

    def _drain(self) -> None:
        self._check_fork()
        while True:
            with self._lock:
                futures = [f for f in self._futures if not f.done()]
                self._futures = futures
            if not futures:
                return
            for future in futures:
                future.result()

    def _raise_failure(self) -> None:
        with self._lock:
            failure, self._failure = self._failure, None
        if failure is not None:
            error = failure.exception()
            if error is failure.error:
                raise error
            raise error from failure.error

    def _check_fork(self) -> None:
        if os.getpid() != self._pid:  # a forked child has the state but not the writer thread
            self._reset()


def _check_wrapped(checkpoint_io: Any) -> None:
    if checkpoint_io is None:
        return
    if isinstance(checkpoint_io, AsyncCheckpointIO):
        raise TypeError(
            "`AsyncCheckpointIO(checkpoint_io=...)` got another `AsyncCheckpointIO`: its writes are already"
            " asynchronous. Use it directly instead of wrapping it."
        )
    if not isinstance(checkpoint_io, CheckpointIO):
        raise TypeError(
            f"`AsyncCheckpointIO(checkpoint_io=...)` expects a `CheckpointIO` instance (e.g. `TorchCheckpointIO()`),"
            f" got {type(checkpoint_io).__name__}."
        )


def _normalize(path: _PATH) -> str:
    text = os.fspath(path)
    return text if "://" in text else os.path.abspath(text)


# ---------------------------------------------------------------------- the host copy
class _Snapshot:
    """Copies a checkpoint's containers and tensors so that training can go on changing the originals.

    Tensors that share a storage (views, tied weights) share one copy of it, exactly as
    ``torch.save`` stores them. With ``buffers`` the copies land in the buffers of the previous
    snapshot where the sizes match (the checkpoint usually has the same layout every time).
    """

    def __init__(self, buffers: list[tuple[Tensor, bool]] | None) -> None:
        self._buffers = buffers
        self._index = 0
        self._storages: dict[tuple[str, int, int], torch.UntypedStorage] = {}
        self._devices: set[torch.device] = set()
        self._memo: dict[int, Any] = {}  # id(original) -> copy; also `copy.deepcopy`'s memo

    def take(self, checkpoint: Any) -> tuple[Any, list[Any]]:
        """The copy, and the CUDA events to wait for before reading it."""
        copied = self._copy(checkpoint)
        if self._buffers is not None:
            del self._buffers[self._index:]  # buffers of storages this checkpoint no longer has
        events = []
        for device in self._devices:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(device))
            events.append(event)
        return copied, events

    def _copy(self, obj: Any) -> Any:
        if isinstance(obj, _IMMUTABLE):
            return obj
        # an object met twice (tied weights: one tensor under two keys) is copied once, so the file
        # stores it once, as `torch.save` of the original does
        done = self._memo.get(id(obj), self._memo)
        if done is not self._memo:
            return done
        copied = self._tensor(obj) if isinstance(obj, Tensor) else self._container(obj)
        self._memo[id(obj)] = copied
        return copied

    def _container(self, obj: Any) -> Any:
        if type(obj) in (dict, OrderedDict):
            new = copy.copy(obj)  # keeps an OrderedDict's attributes (a state dict's `_metadata`)
            for key, value in obj.items():
                new[key] = self._copy(value)
            return new
        if type(obj) is list:
            return [self._copy(v) for v in obj]
        if type(obj) is tuple:
            return tuple(self._copy(v) for v in obj)
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a named tuple
            return type(obj)(*(self._copy(v) for v in obj))
        try:  # anything else (hyperparameter objects, NumPy arrays, sets, ...)
            return copy.deepcopy(obj, self._memo)
        except Exception:  # not copyable: saved as it is when written
            return obj

    def _tensor(self, t: Tensor) -> Tensor:
        plain = (type(t) in (Tensor, nn.Parameter) and t.layout == torch.strided and t.device.type in ("cpu", "cuda")
                 and not (t.is_nested or t.is_quantized or t.is_conj() or t.is_neg())
                 and (t.is_leaf or not t.requires_grad))
        if not plain:
            try:
                return copy.deepcopy(t, self._memo)
            except Exception:  # e.g. a non-leaf tensor that requires grad
                return t.detach().clone()
        storage = t.untyped_storage()
        key = (str(t.device), storage.data_ptr(), storage.nbytes())
        copied = self._storages.get(key)
        if copied is None:
            copied = self._storages[key] = self._copy_storage(storage, t.device)
        out = torch.empty(0, dtype=t.dtype).set_(copied, t.storage_offset(), t.size(), t.stride())
        if isinstance(t, nn.Parameter):
            return nn.Parameter(out, requires_grad=t.requires_grad)
        return out.requires_grad_(t.requires_grad)

    def _copy_storage(self, storage: torch.UntypedStorage, device: torch.device) -> torch.UntypedStorage:
        on_cuda = device.type == "cuda"
        source = torch.empty(0, dtype=torch.uint8, device=device).set_(storage)
        target = self._buffer(storage.nbytes(), pinned=on_cuda)
        # from CUDA: queued on the current stream, so it reads the values before any later kernel
        # changes them; the writer thread waits for the event recorded after it
        target.copy_(source, non_blocking=on_cuda)
        if on_cuda:
            self._devices.add(device)
        return target.untyped_storage()

    def _buffer(self, nbytes: int, pinned: bool) -> Tensor:
        buffers, index = self._buffers, self._index
        self._index += 1
        if buffers is not None and index < len(buffers):
            buffer, is_pinned = buffers[index]
            if buffer.numel() == nbytes and is_pinned == pinned:
                return buffer
        # exactly the storage's size: `torch.save` writes whole storages
        buffer = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned)
        if buffers is not None:
            if index < len(buffers):
                buffers[index] = (buffer, pinned)
            else:
                buffers.append((buffer, pinned))
        return buffer


# ---------------------------------------------------------------------- helpers for plug-in users
def wait_for_checkpoint_writes(checkpoint_io: CheckpointIO) -> None:
    """Block until the background writes of ``checkpoint_io`` are complete (nothing to do for a synchronous one).

    Raises:
        OSError, RuntimeError: a background write failed (the message names its file).
    """
    if isinstance(checkpoint_io, AsyncCheckpointIO):
        checkpoint_io.wait()


def _pending_state(checkpoint_io: CheckpointIO, path: _PATH) -> bool | None:
    """Whether ``path`` will exist once the queued writes ran (``None``: none is queued for it)."""
    if isinstance(checkpoint_io, AsyncCheckpointIO):
        return checkpoint_io._pending_state(path)
    return None


def _after_pending_writes(checkpoint_io: CheckpointIO, job: Callable[[], None], path: _PATH) -> None:
    """Run ``job`` (which creates ``path``) after the queued writes, or now for a synchronous plug-in."""
    if isinstance(checkpoint_io, AsyncCheckpointIO):
        checkpoint_io._after_writes(job, path, "link", exists_after=True)
    else:
        job()


# ---------------------------------------------------------------------- interpreter exit
_LIVE: weakref.WeakSet[AsyncCheckpointIO] = weakref.WeakSet()
_EXIT_HOOK: list[bool] = []


def _register(io: AsyncCheckpointIO) -> None:
    _LIVE.add(io)
    if not _EXIT_HOOK:
        _EXIT_HOOK.append(True)
        atexit.register(_report_at_exit)


def _report_at_exit() -> None:
    """The writer threads were joined before ``atexit`` runs (their queued writes completed); report
    the errors no one has seen, since nothing can raise them any more."""
    for io in list(_LIVE):
        try:
            io._drain()
        except BaseException:  # exiting: report what can be reported
            continue
        failure = io._failure
        if failure is not None:
            io._failure = None
            print(f"torchbolt: a background checkpoint operation failed: {failure.exception()}", file=sys.stderr)
