"""File access through fsspec: local paths and remote URLs (``s3://``, ``memory://``, ...) alike."""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Union

import torch

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

_PATH = Union[str, Path, "os.PathLike[str]"]


def get_filesystem(path: _PATH, **kwargs: Any) -> AbstractFileSystem:
    """The fsspec filesystem of ``path`` (local for plain paths)."""
    import fsspec  # imported on first use: it would add ~10 ms to `import torchbolt`

    fs, _ = fsspec.core.url_to_fs(str(path), **kwargs)
    return fs


def _is_local(fs: AbstractFileSystem) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _fsync_dir(directory: str) -> None:
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


def _atomic_save(data: bytes, path: _PATH) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the complete new one.

    Local: a temporary file in the same directory, flushed and fsynced, then ``os.replace`` and an
    fsync of the directory (so the rename itself survives power loss). Remote (fsspec): write to a
    temporary name, then move it over the target.
    """
    fs = get_filesystem(path)
    path_str = str(path)
    if _is_local(fs):
        path_str = fs._strip_protocol(path_str)
        directory = os.path.dirname(os.path.abspath(path_str))
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".{os.path.basename(path_str)}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path_str)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        _fsync_dir(directory)
        return
    parent = path_str.rsplit("/", 1)[0]
    if parent and not fs.exists(parent):
        fs.makedirs(parent, exist_ok=True)
    tmp = f"{path_str}.{uuid.uuid4().hex}.tmp"
    try:
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, path_str)
    except BaseException:
        try:
            if fs.exists(tmp):
                fs.rm(tmp)
        except Exception:
            pass
        raise


def _load(path_or_url: IO | _PATH, map_location: Any = None, weights_only: bool | None = None) -> Any:
    """``torch.load`` from a path, URL or file object; ``weights_only=True`` unless told otherwise."""
    if weights_only is None:
        weights_only = True
    if not isinstance(path_or_url, (str, Path)):
        return torch.load(path_or_url, map_location=map_location, weights_only=weights_only)
    fs = get_filesystem(path_or_url)
    with fs.open(str(path_or_url), "rb") as f:
        data = f.read()
    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=weights_only)
