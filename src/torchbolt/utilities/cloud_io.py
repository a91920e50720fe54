"""File access through fsspec: local paths and remote URLs (``s3://``, ``memory://``, ...) alike.

Checkpoints are written atomically (a reader sees the complete old file or the complete new one,
never a partial one) and read with ``torch.load(weights_only=True)`` by default, which only
rebuilds tensors and plain Python data and never runs code from the file.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, Union

import torch

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

# TEMP_FILE_PATTERN (any temporary file of an atomic write) is re-exported for existing imports
from torchbolt.utilities._temp_files import TEMP_FILE_PATTERN, remove_stale_temp_files, temp_name  # noqa: F401
from torchbolt.utilities.exceptions import CorruptCheckpointError

_PATH = Union[str, Path, "os.PathLike[str]"]


def get_filesystem(path: _PATH, **kwargs: Any) -> AbstractFileSystem:
    """The fsspec filesystem of ``path`` (local for plain paths)."""
    import fsspec  # imported on first use: it would add ~10 ms to `import torchbolt`

    fs, _ = fsspec.core.url_to_fs(str(path), **kwargs)
    return fs


def _is_local(fs: AbstractFileSystem) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _is_local_path(path: _PATH) -> bool:
    return _is_local(get_filesystem(path))


def _fsync_dir(directory: str) -> None:
    """Make a rename inside ``directory`` durable (not every OS/filesystem supports it: best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_REASONS = {
    errno.ENOSPC: ("no space left on device", "Free space on that device or point the checkpoint `dirpath` elsewhere."),
    errno.EDQUOT: ("disk quota exceeded", "Free space or point the checkpoint `dirpath` elsewhere."),
    errno.EACCES: ("permission denied", "Make the directory writable or choose another `dirpath`."),
    errno.EPERM: ("operation not permitted", "Make the directory writable or choose another `dirpath`."),
    errno.EROFS: ("read-only file system", "Choose a writable `dirpath`."),
    errno.EFBIG: ("file too large", "Raise the file size limit or write smaller checkpoints."),
}


def _write_error(error: OSError, path: str) -> OSError:
    """``error`` re-raised with a message naming the file, the cause and the fix (same errno, same class)."""
    reason, fix = _REASONS.get(error.errno or -1, (error.strerror or str(error), "Check the destination."))
    message = (
        f"Could not write the checkpoint {path}: {reason}. Nothing was replaced: every checkpoint written"
        f" before is intact and the partial file was removed. {fix}"
    )
    return OSError(error.errno, message) if error.errno is not None else OSError(message)


def _atomic_save(data: bytes, path: _PATH) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the complete new one
    (see :func:`_atomic_write`)."""
    _atomic_write(path, lambda f: f.write(data))


class _Sink(Protocol):
    def write(self, data: bytes, /) -> Any: ...


class _FullWriter:
    """A file descriptor as a binary sink whose ``write`` writes every byte or raises (``OSError`` on
    a full disk), never returns a short count.

    ``torch.save`` into a file object replaces an exception of ``write`` with its own unrelated
    ``RuntimeError``; the first ``OSError`` is kept in :attr:`error` so the caller can raise it.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.error: OSError | None = None

    def write(self, data: bytes, /) -> int:
        view = memoryview(data).cast("B")
        total = len(view)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as e:
            self.error = self.error or e
            raise
        return total

    def flush(self) -> None:
        """Nothing is buffered."""


def _atomic_write(path: _PATH, write: Callable[[_Sink], Any]) -> None:
    """Let ``write`` fill a new file for ``path``, so that a crash leaves the old file or the complete new one.

    Local: ``write`` fills a temporary file in the same directory (so the rename stays on one
    filesystem), which is flushed and fsynced, then ``os.replace``d over the target, and the
    directory is fsynced (so the rename itself survives a power loss). Remote (fsspec): a temporary
    object, then moved. Streaming into the file (instead of building the bytes first) keeps one
    copy of the checkpoint out of memory.
    The temporary name is unique to this process and this write (see ``_temp_files``), so writers
    sharing a folder never touch each other's files; after a local write, the temporary files that
    processes killed mid-write left in the folder are removed (never those of live writers).

    Raises:
        OSError: (its errno-specific subclass) when the write fails, e.g. ``ENOSPC`` or ``EACCES``;
            the message names the file; the target and every other file are left as they were.
            Anything else ``write`` raises propagates unchanged (the temporary file is removed).
    """
    fs = get_filesystem(path)
    path_str = str(path)
    if _is_local(fs):
        path_str = os.path.abspath(fs._strip_protocol(path_str))
        directory = os.path.dirname(path_str)
        tmp = os.path.join(directory, temp_name(os.path.basename(path_str)))
        try:
            os.makedirs(directory, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            sink = _FullWriter(fd)
            try:
                write(sink)
                os.fsync(fd)
            except BaseException as e:
                if sink.error is not None and not isinstance(e, OSError):
                    raise sink.error from e  # the disk's error, not the serializer's report of it
                raise
            finally:
                os.close(fd)
            os.replace(tmp, path_str)
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            if isinstance(e, OSError):
                raise _write_error(e, path_str) from e
            raise
        _fsync_dir(directory)
        remove_stale_temp_files(directory)
        return
    parent, _, name = path_str.rpartition("/")
    tmp = f"{parent}/{temp_name(name)}"
    try:
        if parent and not fs.exists(parent):
            fs.makedirs(parent, exist_ok=True)
        with fs.open(tmp, "wb") as f:
            write(f)
        fs.mv(tmp, path_str)
    except BaseException as e:
        with contextlib.suppress(Exception):
            if fs.exists(tmp):
                fs.rm(tmp)
        if isinstance(e, OSError):
            raise _write_error(e, path_str) from e
        raise


def _atomic_symlink(target: str, link: str) -> None:
    """Point ``link`` at ``target`` (relative), replacing what ``link`` was in one rename."""
    directory = os.path.dirname(os.path.abspath(link))
    tmp = os.path.join(directory, temp_name(os.path.basename(link)))
    relative = os.path.relpath(os.path.abspath(target), directory)
    try:
        os.symlink(relative, tmp)
        os.replace(tmp, link)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise _write_error(e, link) from e
    _fsync_dir(directory)


def _unsafe_error(name: str, what: str | None) -> pickle.UnpicklingError:
    reference = f"a reference to `{what}`" if what else "a reference to a Python object other than plain data"
    return pickle.UnpicklingError(
        f"Refused to load {name}: it holds {reference}, which could run code when unpickled, so the weights-only"
        " loading used by default does not allow it (only tensors and the plain data types listed under"
        " 'Types that load' in docs/checkpointing.md load; an Enum loads once the module defining it is"
        " imported). If you trust this file, load it with `weights_only=False`"
        " (`Model.load_from_checkpoint(path, weights_only=False)`, `trainer.fit(model, ckpt_path=path,"
        " weights_only=False)`), or allow only the types it needs with `torch.serialization.add_safe_globals([...])`."
    )


def _corrupt_error(error: BaseException, name: str) -> CorruptCheckpointError:
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return CorruptCheckpointError(
        f"{name} is not a readable checkpoint: it is truncated, corrupt or not a torch checkpoint"
        f" ({type(error).__name__}: {detail[:200]})."
    )


def _directory_error(fs: AbstractFileSystem, name: str) -> IsADirectoryError:
    try:
        inside = sorted(os.path.basename(str(p).rstrip("/")) for p in fs.ls(name, detail=False))
    except OSError:
        inside = []
    checkpoints = [n for n in inside if n.endswith(".ckpt")][:5]
    hint = f" It holds {checkpoints}; pass one of them." if checkpoints else " Pass the path of a checkpoint file."
    return IsADirectoryError(f"{name} is a directory, not a checkpoint file.{hint}")


def _is_format_error(error: BaseException) -> bool:
    if isinstance(error, (EOFError, IndexError, KeyError, pickle.UnpicklingError, UnicodeDecodeError)):
        return True
    message = str(error)
    return isinstance(error, (RuntimeError, ValueError)) and any(
        marker in message for marker in ("PytorchStreamReader", "zip archive", "magic number", "unexpected EOF",
                                         "storage has wrong", "invalid load key", "negative seek value")
    )


def _read(path_or_url: IO | _PATH) -> tuple[bytes, str]:
    """The checkpoint's bytes and its name (the path, or the file object's ``name``)."""
    if isinstance(path_or_url, (str, Path, os.PathLike)):
        name = str(path_or_url)
        fs = get_filesystem(name)
        if not fs.exists(name):
            raise FileNotFoundError(f"Checkpoint file not found: {name}")
        if fs.isdir(name):
            raise _directory_error(fs, name)
        with fs.open(name, "rb") as f:
            return f.read(), name
    name = str(getattr(path_or_url, "name", None) or f"the {type(path_or_url).__name__} passed in")
    data = path_or_url.read()
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise TypeError(f"{name} was opened in text mode: open checkpoint files in binary mode (`open(path, 'rb')`).")
    return data, name


def _load(path_or_url: IO | _PATH, map_location: Any = None, weights_only: bool | None = None,
          verify: bool | None = None) -> Any:
    """``torch.load`` from a path, URL or file object; ``weights_only=True`` unless told otherwise.

    With ``weights_only`` the plain data types of :mod:`torchbolt.utilities.safe_loading` load too
    (paths, ``Namespace``, ``AttributeDict``, datetimes, NumPy values, enums of imported modules).
    ``verify`` (default: on unless ``TORCHBOLT_VERIFY_CHECKPOINTS=0``) checks every zip record's
    CRC-32 (:mod:`torchbolt.utilities.checkpoint_integrity`), so damaged bytes never load silently.

    Raises:
        FileNotFoundError: no file at the path.
        IsADirectoryError: the path is a directory (the message lists the checkpoints in it).
        pickle.UnpicklingError: the file needs arbitrary unpickling and ``weights_only`` is not ``False``
            (the message names what the file refers to).
        ChecksumMismatchError: (a ``CorruptCheckpointError``) the bytes changed after the file was written.
        CorruptCheckpointError: the file is truncated, corrupt or not a torch checkpoint.
    """
    from torchbolt.utilities.checkpoint_integrity import start_verification, verification_enabled

    if weights_only is None:
        weights_only = True
    data, name = _read(path_or_url)
    pending = start_verification(data, name) if verification_enabled(verify) else None
    try:
        loaded = _torch_load(io.BytesIO(data), data, name, map_location, weights_only)
    except BaseException:
        if pending is not None:
            pending.result()  # damaged bytes explain a failed load better than the unpickler's complaint
        raise
    if pending is not None:
        pending.result()
    return loaded


def _torch_load(source: IO[bytes], data: bytes, name: str, map_location: Any, weights_only: bool) -> Any:
    from torchbolt.utilities import safe_loading

    if not weights_only:
        return _mapped_errors(lambda: torch.load(source, map_location=map_location, weights_only=False),
                              name, data, map_location)
    entries = safe_loading.plain_data_entries()

    def weights_only_load(allow: list[Any]) -> Any:
        source.seek(0)
        with safe_loading.allowed(allow):
            return torch.load(source, map_location=map_location, weights_only=True)

    with safe_loading.collecting_attribute_dicts():
        try:
            loaded = _mapped_errors(lambda: weights_only_load(entries), name, data, map_location)
        except pickle.UnpicklingError as refusal:
            # enums of imported modules load as their members: allow them and try once more
            enums, refused = safe_loading.enum_entries(safe_loading.unsafe_references(data))
            if not enums or refused:
                raise refusal from None
            loaded = _mapped_errors(lambda: weights_only_load(entries + enums), name, data, map_location)
        return safe_loading.restore_attribute_dicts(loaded)


def _mapped_errors(load: Any, name: str, data: bytes, map_location: Any) -> Any:
    """``load()``, with the errors of a refused or damaged file turned into clear ones naming ``name``."""
    from torchbolt.utilities.safe_loading import refused_reference

    try:
        return load()
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):
            what = refused_reference(str(e), data)
            if what is not None:
                # a well-formed pickle that names a Python object the weights-only loader does not allow
                raise _unsafe_error(name, what) from None
        raise _corrupt_error(e, name) from e
    except Exception as e:
        # a damaged pickle can also name a wrong attribute; a callable map_location could raise one itself
        if _is_format_error(e) or (isinstance(e, AttributeError) and not callable(map_location)):
            raise _corrupt_error(e, name) from e
        raise
