"""Which rank failed first, so that a multi-process run ends with one line naming it.

When one rank raises, its peers fail a moment later inside a collective with errors such as gloo's
"Connection closed by peer", and the process the user watches prints that consequence last. So every rank
that fails writes a one-record summary of its exception into a directory shared by the job (created by
the launching process); the launching process reads them and names the rank whose failure was not a
reaction to another's, as the last line of what it prints.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

# set by the process that starts the other ranks: the directory every rank writes its failure summary to
FAILURE_DIR_ENV = "TORCHBOLT_FAILURE_DIR"

# How long a rank whose error is a reaction to a peer's failure waits for that peer's summary (the peer writes
# it before it tears down, i.e. before the connections close, so normally it is there already).
PEER_SUMMARY_WAIT_S = 5.0

# Words of the errors a rank sees when another rank has died or left: gloo/NCCL transport and timeout errors.
_PEER_FAILURE_MARKERS = (
    "connection closed by peer",
    "connection reset by peer",
    "broken pipe",
    "socket closed",
    "connection refused",
    "timed out",
    "timeout",
    "has been aborted",
    "communicator was aborted",
    "remote worker",
)

_MAX_MESSAGE = 500
_MAX_TRACEBACK = 20_000

# counts the launches (Trainer entry points) of this process; every rank runs the same sequence, so the n-th
# launch of each rank is the same run and summaries of earlier, already handled failures are not mixed in
_launches = 0


def next_launch() -> int:
    """The number of this launch in this process (1, 2, ...); call once at the start of every launch."""
    global _launches
    _launches += 1
    return _launches


@dataclass(frozen=True)
class RankFailure:
    """One rank's failure: its global rank, the exception's type and first message line, and when."""

    rank: int
    kind: str
    message: str
    time: float
    reaction: bool
    launch: int
    traceback: str = ""

    def summary(self) -> str:
        """``ValueError: boom`` (the message's first line, shortened)."""
        return f"{self.kind}: {self.message}" if self.message else self.kind

    def last_line(self, traceback_above: bool = True) -> str:
        """The line that ends the run's output."""
        where = "; its traceback is printed above" if traceback_above else ""
        return f"[torchbolt] rank {self.rank} failed first, with {self.summary()}{where}."


def make_failure_dir() -> str:
    """A new directory for one job's failure summaries."""
    return tempfile.mkdtemp(prefix="torchbolt-failures-")


def is_reaction_to_peer_failure(exception: BaseException) -> bool:
    """Whether ``exception`` looks like the consequence of another rank dying (a transport error or a timeout).

    Such errors rank after any other when choosing the first failure, whatever their time.
    """
    with contextlib.suppress(ImportError, AttributeError):
        import torch.distributed as dist

        if isinstance(exception, dist.DistError):
            return True
    text = f"{type(exception).__name__}: {exception}".lower()
    return any(marker in text for marker in _PEER_FAILURE_MARKERS)


def should_record(exception: BaseException) -> bool:
    """Errors only: ``KeyboardInterrupt``/``SystemExit`` (Ctrl-C, a graceful signal stop) stop every rank alike."""
    from torchbolt.utilities.exceptions import _TunerExitException

    return isinstance(exception, Exception) and not isinstance(exception, _TunerExitException)


def record_failure(directory: str, rank: int, exception: BaseException, launch: int) -> RankFailure | None:
    """Write ``exception``'s summary for ``rank`` into ``directory``; never raises (it runs while failing).

    Returns:
        The record written, or ``None`` when ``exception`` is not an error to report or writing failed.
    """
    if not should_record(exception):
        return None
    lines = str(exception).strip().splitlines()
    message = lines[0].strip() if lines else ""
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3] + "..."
    record = RankFailure(
        rank=rank,
        kind=type(exception).__qualname__,
        message=message,
        time=time.time(),
        reaction=is_reaction_to_peer_failure(exception),
        launch=launch,
        traceback="".join(traceback.format_exception(exception))[-_MAX_TRACEBACK:],
    )
    target = Path(directory) / f"rank{rank}.launch{launch}.json"
    try:
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(asdict(record)))
        os.replace(partial, target)  # readers never see half a record
    except OSError:
        return None
    return record


def read_failures(directory: str | None, launch: int | None = None) -> list[RankFailure]:
    """Every readable summary in ``directory`` (only those of ``launch`` when given)."""
    if not directory or not os.path.isdir(directory):
        return []
    pattern = f"rank*.launch{launch}.json" if launch is not None else "rank*.launch*.json"
    failures = []
    for path in Path(directory).glob(pattern):
        with contextlib.suppress(OSError, ValueError, TypeError):
            failures.append(RankFailure(**json.loads(path.read_text())))
    return failures


def first_failure(failures: list[RankFailure]) -> RankFailure | None:
    """The failure that started it: the earliest that was not a reaction to a peer's, else the earliest."""
    if not failures:
        return None
    return min(failures, key=lambda f: (f.reaction, f.time, f.rank))


def latest_first_failure(directory: str | None) -> RankFailure | None:
    """The first failure of the latest launch that failed (earlier ones were handled, or the job would be over)."""
    failures = read_failures(directory)
    if not failures:
        return None
    latest = max(f.launch for f in failures)
    return first_failure([f for f in failures if f.launch == latest])


def wait_for_first_failure(directory: str, launch: int, own: RankFailure | None,
                           peers_gone: Callable[[], bool] | None = None,
                           timeout: float = PEER_SUMMARY_WAIT_S) -> RankFailure | None:
    """The first failure of ``launch``.

    When this rank's own error is only a reaction to a peer's failure, waits up to ``timeout`` seconds for a
    peer's summary that is not, or until ``peers_gone()`` says every peer has exited (a peer writes its
    summary before it exits, so none will come then: it was killed, e.g. by SIGKILL).
    """
    deadline = time.monotonic() + timeout
    while True:
        gone = peers_gone is not None and peers_gone()
        found = first_failure(read_failures(directory, launch))
        if own is None or not own.reaction or (found is not None and not found.reaction):
            return found
        if gone or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


def remove_failure_dir(directory: str | None) -> None:
    """Delete the summaries and their directory (ignoring what is already gone)."""
    if not directory:
        return
    import shutil

    shutil.rmtree(directory, ignore_errors=True)
