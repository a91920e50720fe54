"""Detecting checkpoints whose bytes changed after they were written (bit rot, bad copies).

A ``torch.save`` file is a zip archive: one record for the pickled structure (``data.pkl``), one per
tensor storage (``data/<key>``) and a few small metadata records. The zip format stores a CRC-32 of
every record, and ``torch.save`` fills it in, but ``torch.load`` never checks it: a flipped bit in
tensor data loads silently as a different weight. :func:`verify_archive` recomputes every record's
CRC-32 from the bytes already read into memory and compares it with the stored one.

This needs nothing at save time, so it covers files written by older torchbolt versions and by
PyTorch Lightning alike. Files without checksums are loaded unverified: the legacy (non-zip)
``torch.save`` format, and archives written with ``torch.utils.serialization.config.save.
compute_crc32 = False`` (every stored CRC is then 0).

Cost: the standard library's CRC-32 (zlib) runs at about 4 GB/s; ``zlib-ng`` (the ``fast-checksums``
extra, also in ``all``) or ``isal``, when installed, at 15-20 GB/s, and is then used instead. All
release the GIL, so for large files :func:`start_verification` runs the check on a second thread
while ``torch.load`` rebuilds the tensors (see ``benchmarks/RESULTS.md``). Set
``TORCHBOLT_VERIFY_CHECKPOINTS=0`` to skip it.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import threading
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torchbolt.utilities.exceptions import CorruptCheckpointError

VERIFY_ENV_VAR = "TORCHBOLT_VERIFY_CHECKPOINTS"
# below this size the check takes well under a millisecond: a second thread would cost more than it saves
_THREAD_THRESHOLD_BYTES = 8 * 1024 * 1024
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, (version .. sizes), name length, extra length
_LOCAL_SIGNATURE = b"PK\x03\x04"  # also the first bytes of every zip-format torch.save file


_crc32_choice: tuple[Callable[[Any], int], str] | None = None


def crc32_implementation() -> tuple[Callable[[Any], int], str]:
    """The fastest CRC-32 available and its name: ``zlib-ng``, ``isal`` (SIMD, optional packages) or ``zlib``.

    All three compute the same checksum (the zip format's); only the speed differs.
    """
    global _crc32_choice
    if _crc32_choice is None:
        try:
            from zlib_ng import zlib_ng

            _crc32_choice = (zlib_ng.crc32, "zlib-ng")
        except ImportError:
            try:
                from isal import isal_zlib

                _crc32_choice = (isal_zlib.crc32, "isal")
            except ImportError:
                _crc32_choice = (zlib.crc32, "zlib")
    return _crc32_choice


class ChecksumMismatchError(CorruptCheckpointError):
    """A checkpoint's bytes differ from what was written: at least one zip record fails its CRC-32.

    The message names the file, each damaged record and, for tensor data, the checkpoint entry
    holding the tensor (e.g. ``state_dict.net.0.weight``).
    """


def verification_enabled(verify: bool | None = None) -> bool:
    """``verify`` when given, else whether ``TORCHBOLT_VERIFY_CHECKPOINTS`` is unset or not ``0``/``false``/``no``/``off``."""
    if verify is not None:
        return verify
    return os.environ.get(VERIFY_ENV_VAR, "1").strip().lower() not in ("0", "false", "no", "off")


@dataclass(frozen=True)
class _Mismatch:
    record: str
    stored: int
    computed: int | None  # None: the record's zip header itself is damaged


def _find_mismatches(data: bytes) -> list[_Mismatch] | None:
    """Every record whose CRC-32 does not match, or ``None`` when ``data`` has no checksums to verify."""
    view = memoryview(data)  # slices of it share the bytes; io.BytesIO(data) shares them too (no copy)
    if data[:4] != _LOCAL_SIGNATURE:
        return None  # legacy torch format or not a checkpoint at all: torch.load decides
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        return None  # no readable central directory (e.g. truncated): torch.load reports the damage
    if not records or all(r.CRC == 0 for r in records):
        return None  # written with CRC computation turned off
    crc32 = crc32_implementation()[0]
    mismatches: list[_Mismatch] = []
    for record in records:
        header = view[record.header_offset:record.header_offset + _LOCAL_HEADER.size]
        if len(header) < _LOCAL_HEADER.size:
            mismatches.append(_Mismatch(record.filename, record.CRC, None))
            continue
        signature, name_length, extra_length = _LOCAL_HEADER.unpack(header)
        if signature != _LOCAL_SIGNATURE:
            mismatches.append(_Mismatch(record.filename, record.CRC, None))
            continue
        start = record.header_offset + _LOCAL_HEADER.size + name_length + extra_length
        if record.compress_type == zipfile.ZIP_STORED:
            payload = view[start:start + record.compress_size]
            if len(payload) != record.compress_size:
                mismatches.append(_Mismatch(record.filename, record.CRC, None))
                continue
            computed = crc32(payload)  # releases the GIL for large buffers
        else:  # torch.save never compresses; another tool might have re-packed the archive
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as archive:
                    computed = zlib.crc32(archive.read(record.filename))
            except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError):
                mismatches.append(_Mismatch(record.filename, record.CRC, None))
                continue
        if computed != record.CRC:
            mismatches.append(_Mismatch(record.filename, record.CRC, computed))
    return mismatches


def verify_archive(data: bytes, name: str) -> None:
    """Check every zip record of the checkpoint bytes ``data`` against its stored CRC-32.

    Does nothing for data without checksums (legacy format, CRCs turned off, or not a zip archive
    at all: ``torch.load`` then reports what is wrong).

    Raises:
        ChecksumMismatchError: a record's bytes do not match its checksum; the message names ``name``,
            the records and the checkpoint entries of the damaged tensors.
    """
    mismatches = _find_mismatches(data)
    if mismatches:
        raise _mismatch_error(data, name, mismatches)


class PendingVerification:
    """A verification running next to ``torch.load``; :meth:`result` waits for it and raises what it found."""

    def __init__(self, data: bytes, name: str, threaded: bool) -> None:
        self._data = data
        self._name = name
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="torchbolt-checkpoint-crc", daemon=True)
            self._thread.start()
        else:
            self._run()

    def _run(self) -> None:
        try:
            verify_archive(self._data, self._name)
        except BaseException as e:  # handed to the loading thread by result()
            self._error = e

    def result(self) -> None:
        """Wait for the check to finish.

        Raises:
            ChecksumMismatchError: the file's bytes are damaged.
        """
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error


def start_verification(data: bytes, name: str) -> PendingVerification:
    """Begin verifying ``data``: on a second thread for large files, so it overlaps with ``torch.load``."""
    return PendingVerification(data, name, threaded=len(data) >= _THREAD_THRESHOLD_BYTES)


def _mismatch_error(data: bytes, name: str, mismatches: list[_Mismatch]) -> ChecksumMismatchError:
    entries = _storage_entries(data)
    described = []
    for mismatch in mismatches[:5]:
        record = mismatch.record
        _, _, inner = record.partition("/")  # records are "<archive name>/data/<key>", "<archive name>/data.pkl", ...
        if inner.startswith("data/"):
            paths = entries.get(inner[len("data/"):], [])
            what = (f"the data of tensor `{paths[0]}`" + (f" (and {len(paths) - 1} more sharing it)" if len(paths) > 1
                                                            else "")) if paths else "tensor data"
        elif inner == "data.pkl":
            what = "the pickled structure (keys, numbers, strings)"
        else:
            what = "archive metadata"
        if mismatch.computed is None:
            described.append(f"record '{record}' ({what}) has a damaged zip header")
        else:
            described.append(f"record '{record}' ({what}) has CRC-32 {mismatch.computed:#010x} but was written"
                             f" with {mismatch.stored:#010x}")
    more = f"; and {len(mismatches) - 5} more records" if len(mismatches) > 5 else ""
    return ChecksumMismatchError(
        f"{name} is corrupt: its bytes changed after it was written: {'; '.join(described)}{more}. The damaged"
        " values would load silently as different weights, so the file was not loaded. Use an intact copy or an"
        f" earlier checkpoint. To load it anyway (damage included), set {VERIFY_ENV_VAR}=0."
    )


# ---------------------------------------------------------------------- naming the damaged tensors
class _StorageRef:
    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key


class _Stub:
    """Stands in for every class or function a pickle names: records its arguments, runs nothing."""

    args: tuple[Any, ...]
    items: dict[Any, Any]
    values: list[Any]
    state: Any

    def __new__(cls, *args: Any, **kwargs: Any) -> _Stub:
        obj = super().__new__(cls)
        obj.args = args
        obj.items = {}
        obj.values = []
        obj.state = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.values.append(value)

    def extend(self, values: Any) -> None:
        self.values.extend(values)

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _StructureReader(pickle.Unpickler):
    """Reads ``data.pkl`` without resolving any global: every class or function becomes a :class:`_Stub`."""

    def find_class(self, module: str, name: str) -> Any:
        return type("_Stub", (_Stub,), {})

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage":
            return _StorageRef(str(pid[2]))
        return None


def _storage_entries(data: bytes) -> dict[str, list[str]]:
    """Storage key -> dotted checkpoint entries of the tensors on it (best effort: {} if unreadable).

    Runs only after a mismatch was found. The pickle is read with :class:`_StructureReader`, which never
    imports or calls anything named in the file.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            pkl_name = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
            structure = _StructureReader(io.BytesIO(archive.read(pkl_name))).load()
    except Exception:  # the structure itself may be what is damaged
        return {}
    entries: dict[str, list[str]] = {}
    seen: set[int] = set()

    def walk(obj: Any, path: str) -> None:
        if isinstance(obj, _StorageRef):
            entries.setdefault(obj.key, []).append(path or "<root>")
            return
        if id(obj) in seen or isinstance(obj, (str, bytes, int, float, bool, type(None))):
            return
        seen.add(id(obj))
        if isinstance(obj, dict):
            for key, value in obj.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(obj, (list, tuple, set, frozenset)):
            for index, value in enumerate(obj):
                walk(value, f"{path}.{index}" if path else str(index))
        elif isinstance(obj, _Stub):
            for value in obj.args:  # a tensor's storage, offset, size...: same entry
                walk(value, path)
            walk(obj.items, path)
            walk(obj.values, path)
            walk(obj.state, path)

    walk(structure, "")
    return entries
