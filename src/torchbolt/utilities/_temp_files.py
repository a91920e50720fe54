"""Temporary files of atomic writes: names that say who writes them, and removal of those whose writer is gone.

An atomic write puts its bytes in a temporary file next to the target and renames it over the
target. Several processes may write to one folder at the same time (two fits with the same
``dirpath``, a manual ``trainer.save_checkpoint`` while a fit saves), so a temporary file may only be
removed when its writer can no longer rename it. The name records the writer::

    .<target name>.<host>-<pid>-<start>-<token>.tmp

- ``host``: 8 hex digits hashed from the host name and the process-ID namespace. Process ids mean
  something only inside one namespace of one machine; files written elsewhere (another node on a
  shared filesystem, another container) are never judged, so never removed.
- ``pid``: the writer's process id.
- ``start``: the writer's start time in clock ticks since boot (Linux ``/proc``; ``0`` where
  unknown), so that a process that later got the same pid is not taken for the writer.
- ``token``: 16 random hex digits, so every write has its own file.

A temporary file is *stale* when it was written on this host and its writer no longer runs (killed
in the middle of a write); :func:`remove_stale_temp_files` removes exactly those.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import secrets
import socket

log = logging.getLogger("torchbolt")

_NAME = re.compile(
    r"^\.(?P<target>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-(?P<start>\d+)-(?P<token>[0-9a-f]{16})\.tmp$")
# any temporary file of an atomic write: the names above, and ".<name>.<32 hex>.tmp" of older releases
# (whose writer cannot be told, so they are never removed automatically)
TEMP_FILE_PATTERN = re.compile(r"^\..+\.(?:[0-9a-f]{32}|[0-9a-f]{8}-\d+-\d+-[0-9a-f]{16})\.tmp$")
# the target's name is only a hint for people: shortened so that the temporary name stays within the
# usual 255-byte limit of a file name
_TARGET_BYTES = 150


@functools.lru_cache(maxsize=1)
def _host_id() -> str:
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return hashlib.sha256(f"{socket.gethostname()}\0{namespace}".encode()).hexdigest()[:8]


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), ``None`` when unreadable.

    Raises:
        FileNotFoundError: no such process while ``/proc`` is there.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            raise
        return None
    except OSError:
        return None
    # the command name may hold spaces and parentheses: the fields start after the last ")"
    fields = stat[stat.rfind(b")") + 2:].split()
    return fields if len(fields) > 19 else None


def _start_ticks(pid: int) -> int:
    """When ``pid`` started, in clock ticks since boot (``0`` where this cannot be read)."""
    try:
        fields = _stat_fields(pid)
    except FileNotFoundError:
        return 0
    return int(fields[19]) if fields is not None else 0


@functools.lru_cache(maxsize=4)
def _own_start(pid: int) -> int:
    # keyed by pid: a forked child gets its own value
    return _start_ticks(pid)


def temp_name(target_name: str, pid: int | None = None) -> str:
    """A fresh temporary file name for a write to ``target_name``, by process ``pid`` (default: this one)."""
    pid = os.getpid() if pid is None else pid
    start = _own_start(pid) if pid == os.getpid() else _start_ticks(pid)
    short = target_name.encode()[:_TARGET_BYTES].decode(errors="ignore") or "file"
    return f".{short}.{_host_id()}-{pid}-{start}-{secrets.token_hex(8)}.tmp"


def _writer_alive(pid: int, start: int) -> bool:
    """Whether the process that named a temporary file ``pid``/``start`` may still be writing it.

    Only ``False`` when that is certain: unknown cases count as alive, so their files are kept.
    """
    if pid <= 0:
        return True  # not a name this module writes: leave it alone
    if pid == os.getpid():
        # this process (another thread writing), unless an earlier process had the same pid
        return start == _own_start(pid)
    try:
        fields = _stat_fields(pid)
    except FileNotFoundError:
        return False
    if fields is None:  # no /proc (macOS, ...): ask the kernel whether the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:  # EPERM: it exists, owned by someone else
            return True
        return True
    if fields[0] in (b"Z", b"X"):  # exited, not yet reaped by its parent: it writes nothing any more
        return False
    return not (start and int(fields[19]) != start)  # another process that got the same pid later


def is_stale(name: str) -> bool:
    """Whether ``name`` is a temporary file written on this host by a process that no longer runs."""
    match = _NAME.match(name)
    if match is None or match["host"] != _host_id():
        return False
    return not _writer_alive(int(match["pid"]), int(match["start"]))


def remove_stale_temp_files(directory: str) -> int:
    """Remove the stale temporary files (see :func:`is_stale`) in the local ``directory``; return how many.

    Temporary files of live writers, of other hosts and of older releases, sub-folders and every
    other file are left alone. Errors (an unreadable folder, a file removed meanwhile) are ignored:
    this is housekeeping and must never fail a save.
    """
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        with contextlib.suppress(OSError):
            if is_stale(entry.name) and not entry.is_dir(follow_symlinks=False):
                os.remove(entry.path)
                removed += 1
    if removed:
        log.debug("Removed %d temporary file(s) of interrupted writes in %s", removed, directory)
    return removed
