"""Which paths a checkpoint callback may delete: only checkpoint files inside its own directory.

Paths such as ``ModelCheckpoint.best_model_path`` or the keys of ``best_k_models`` are restored from
the checkpoint a fit resumes from, and the file they name is deleted when it leaves the top ``k``.
A checkpoint is data from outside, so these paths are checked before every deletion: a path that
leaves the directory (``..``, an absolute path elsewhere, a symlinked folder leading out of it, another
filesystem or URL protocol) is never deleted.
"""

from __future__ import annotations

import os
import posixpath
from typing import Any

from torchbolt.utilities.cloud_io import _is_local, get_filesystem


def resolve_owned_path(path: Any, directory: str, extension: str) -> tuple[str | None, str]:
    """``(path to delete, "")`` when ``path`` is a ``*extension`` entry inside ``directory``, else ``(None, reason)``.

    Contract:

    - ``path`` and ``directory`` must be on the same filesystem: both local, or both fsspec URLs of
      the same protocol.
    - Local: ``path``'s parent folder is resolved the way the kernel resolves it (symlinks followed,
      ``..`` applied after them) and must be ``directory`` (also resolved) or a folder below it. The
      last component itself is not followed, so a symlink inside ``directory`` is deleted as a link
      and its target is never touched. The returned path is that resolved spelling, so what is
      deleted is what was checked.
    - Remote: no ``.``/``..`` components (object stores do not resolve them) and the path must be
      below ``directory``.
    - The name must end with ``extension`` (the files a checkpoint callback writes do).

    Whether the entry is a directory is left to the remover (see ``CheckpointIO.remove_checkpoint``):
    a sharded checkpoint is a directory its strategy knows how to remove file by file.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        return None, "it is not a file path"
    spelled = os.fspath(path)
    if not isinstance(spelled, str):
        return None, "it is not a text path"
    directory_fs = get_filesystem(directory)
    try:
        path_fs = get_filesystem(spelled)
    except Exception:  # an unknown protocol, or one whose fsspec package is not installed
        return None, "it is on another filesystem than `dirpath`"
    if _is_local(directory_fs) != _is_local(path_fs) or type(directory_fs) is not type(path_fs):
        return None, "it is on another filesystem than `dirpath`"
    if _is_local(path_fs):
        return _resolve_local(spelled, directory, extension)
    return _resolve_remote(spelled, path_fs._strip_protocol(spelled), path_fs._strip_protocol(directory), extension)


def _strip_file_protocol(path: str) -> str:
    # "file:///x" and "local://x" are local paths too; plain paths are kept as spelled (relative ones
    # are relative to the working directory, as for the deletion itself)
    if "://" in path:
        from fsspec.implementations.local import LocalFileSystem

        return str(LocalFileSystem._strip_protocol(path))
    return path


def _resolve_local(path: str, directory: str, extension: str) -> tuple[str | None, str]:
    parent, name = os.path.split(_strip_file_protocol(path))
    if name in ("", ".", ".."):
        return None, "it does not name a file"
    if not name.endswith(extension):
        return None, f"it is not a {extension} file"
    real_directory = os.path.realpath(_strip_file_protocol(directory))
    real_parent = os.path.realpath(parent or os.curdir)
    if real_parent != real_directory and not real_parent.startswith(real_directory.rstrip(os.sep) + os.sep):
        return None, f"it resolves to {os.path.join(real_parent, name)!r}, outside `dirpath`"
    return os.path.join(real_parent, name), ""


def _resolve_remote(path: str, stripped: str, stripped_directory: str, extension: str) -> tuple[str | None, str]:
    parts = stripped.split("/")
    if any(part in (".", "..") for part in parts):
        return None, "it contains '.' or '..' components"
    name = parts[-1]
    if not name:
        return None, "it does not name a file"
    if not name.endswith(extension):
        return None, f"it is not a {extension} file"
    root = posixpath.normpath(stripped_directory.rstrip("/") or "/")
    if not stripped.startswith(root.rstrip("/") + "/"):
        return None, "it is outside `dirpath`"
    return path, ""
