"""Self-healing runs under torchrun: after torchrun restarts the workers, ``fit`` resumes by itself.

``torchrun --max-restarts=N`` starts the whole worker group again when one worker fails (a crash, a
SIGKILL, a lost GPU). Every restarted worker runs the script from the top, so ``trainer.fit(model)``
is called again; with this module it continues from the newest complete checkpoint that the run
wrote instead of from step 0, and (checkpoints being exact) ends with the weights of an
uninterrupted run.

When it applies: ``fit`` with ``ckpt_path=None``, under torchrun (``TorchElasticEnvironment``, detected
or passed) with ``auto_resume=True`` (the default) and ``TORCHELASTIC_MAX_RESTARTS`` > 0. A checkpoint
is looked for only in a restart (``TORCHELASTIC_RESTART_COUNT`` > 0 on some rank: torchrun counts per
node, and the nodes whose workers did not fail keep their count).

How the run is identified: in every attempt, rank 0 keeps a small record file,
``<default_root_dir>/.torchbolt-elastic-run.json``: the run id (``TORCHELASTIC_RUN_ID``), the moment the
run started (the record's modification time when the first attempt created it) and, for each ``fit``
call of the script in order, the checkpoint directories it used in every attempt (with a logger,
``ModelCheckpoint``'s default directory changes with each attempt's ``version_<n>``). A first attempt (restart count 0) always starts a new record, so
checkpoints left in those directories by earlier jobs are never resumed. A restart whose record is
missing or names another run id trains from the start (and starts a record).

Which checkpoint: among the files in the recorded directories of this ``fit`` call written since the run
started, the
``last*.ckpt`` files, the ``OnExceptionCheckpoint`` file, the newest ``hpc_ckpt_<n>.ckpt`` of
``default_root_dir`` and every other complete checkpoint (top-k), the one with the furthest training
progress (the rules of ``ckpt_path="last"``: :func:`~torchbolt.trainer.ckpt_path.newest_resumable_checkpoint`).
Checkpoints are written atomically (a file under its final name is complete; interrupted writes leave
hidden ``.tmp`` files, which are not candidates), and unreadable files are skipped. Rank 0 decides and
broadcasts the path, so every rank loads the same file.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import TYPE_CHECKING, Any

from torchbolt.trainer.states import TrainerFn
from torchbolt.utilities.cloud_io import get_filesystem
from torchbolt.utilities.rank_zero import rank_zero_info, rank_zero_warn

if TYPE_CHECKING:
    from torchbolt.trainer.trainer import Trainer

RECORD_NAME = ".torchbolt-elastic-run.json"

# how many `fit` calls this process made per record: a script runs its `fit` calls in the same order in
# every attempt, so the n-th call looks only at the directories of the n-th call of the earlier attempts,
# and a later call of a first attempt keeps the run's start instead of starting a new run
_FIT_CALLS: dict[str, int] = {}


def elastic_resume_path(trainer: Trainer, fn: TrainerFn, environment: Any,
                        weights_only: bool | None = None) -> str | None:
    """The checkpoint a restarted torchrun worker group resumes ``fit`` from, or ``None`` (train from the
    start). Called on every rank with ``ckpt_path=None``; collective when it applies (rank 0 decides).

    ``environment``: the run's cluster environment; only a ``TorchElasticEnvironment`` with
    ``auto_resume=True`` resumes.

    A run record that cannot be written only warns (the run goes on; a restart then trains from the start).

    Raises:
        RuntimeError: rank 0 failed while choosing (e.g. a checkpoint directory cannot be listed); raised on
            every rank with rank 0's error, so that no rank waits for the others.
    """
    from torchbolt.plugins.environments.torchelastic import TorchElasticEnvironment

    if fn != TrainerFn.FITTING:
        return None
    if not isinstance(environment, TorchElasticEnvironment) or not environment.auto_resume:
        return None
    if environment.max_restarts() <= 0:
        return None  # no restart can follow: nothing to record
    # torchrun counts restarts per node (per agent): a node whose workers did not fail may still say 0
    restarted = trainer.strategy.reduce_boolean_decision(environment.restart_count() > 0, all=False)
    outcome: tuple[str, str | None] = ("ok", None)
    if trainer.is_global_zero:
        try:
            outcome = ("ok", _decide(trainer, environment, restarted, weights_only))
        except Exception as e:  # told to every rank below, so none of them waits in a collective
            outcome = ("error", f"{type(e).__name__}: {e}")
    status, value = trainer.strategy.broadcast(outcome)
    if status == "error":
        raise RuntimeError(
            f"Looking for this torchrun run's checkpoint failed on rank 0: {value}. Fix the file access, or turn"
            " self-healing off with `Trainer(plugins=[TorchElasticEnvironment(auto_resume=False)])`."
        )
    return value


def record_path(trainer: Trainer) -> str:
    """Where the run record of ``trainer`` lives: ``<default_root_dir>/.torchbolt-elastic-run.json``."""
    return _join(str(trainer.default_root_dir), RECORD_NAME)


def _decide(trainer: Trainer, environment: Any, restarted: bool, weights_only: bool | None) -> str | None:
    """Rank 0: keep the run record up to date and choose the checkpoint (``None`` in a first attempt).

    ``restarted``: some rank's ``TORCHELASTIC_RESTART_COUNT`` is above 0.
    """
    path = record_path(trainer)
    run_id = str(environment.run_id())
    restart = max(environment.restart_count(), int(restarted))
    dirs = _checkpoint_dirs(trainer)
    call = _FIT_CALLS.get(path, 0)
    _FIT_CALLS[path] = call + 1
    record = _read_record(path)
    same_run = record is not None and record["run_id"] == run_id
    if record is None or not same_run or (not restarted and call == 0):
        if restarted:
            why = "it is missing" if record is None else f"it belongs to the run {record['run_id']!r}"
            rank_zero_info(
                f"torchrun restart {restart}: no record of the earlier attempts of the run {run_id!r} in {path}"
                f" ({why}), so training starts from the beginning."
            )
        try:
            _start_record(path, run_id, [[] for _ in range(call)] + [dirs])
        except OSError as e:
            # the run itself can go on; only a restart would not know where it stood
            rank_zero_warn(
                f"Self-healing is off for this torchrun run: its record {path} cannot be written ({e}). A restart"
                " will train from the start. Make `default_root_dir` writable, or pass `ckpt_path` yourself."
            )
            return None
        return None
    assert record is not None
    calls: list[list[str]] = record["fit_calls"]
    calls.extend([] for _ in range(call + 1 - len(calls)))
    known = calls[call]
    if any(d not in known for d in dirs):
        calls[call] = known + [d for d in dirs if d not in known]
        try:
            _write_json(path, record)
        except OSError as e:
            rank_zero_warn(f"The torchrun run record {path} cannot be updated ({e}): a later restart will not look"
                           f" for checkpoints in {[d for d in dirs if d not in known]}.")
    if not restarted:
        return None  # a later `fit` of the first attempt
    choice = _newest_checkpoint_of_run(trainer, calls[call], float(record["started"]), weights_only)
    if choice is None:
        rank_zero_info(
            f"torchrun restart {restart} of {environment.max_restarts()}: the run {run_id!r} has no complete"
            " checkpoint yet, so training starts from the beginning."
        )
    else:
        rank_zero_info(f"torchrun restart {restart} of {environment.max_restarts()}: resuming the run {run_id!r}"
                       f" from {choice}")
    return choice


def _newest_checkpoint_of_run(trainer: Trainer, folders: list[str], started: float,
                              weights_only: bool | None) -> str | None:
    """The furthest complete checkpoint in ``folders`` (plus the ``OnExceptionCheckpoint`` and requeue
    files) modified at ``started`` or later, or ``None``."""
    from torchbolt.callbacks.on_exception_checkpoint import OnExceptionCheckpoint
    from torchbolt.trainer.ckpt_path import _modified, _normalized, newest_resumable_checkpoint
    from torchbolt.trainer.signals import hpc_resume_path

    last_names = {"last"} | {str(getattr(cb, "CHECKPOINT_NAME_LAST", "last")) for cb in trainer.checkpoint_callbacks}
    last_like: set[str] = set()
    others: set[str] = set()
    for folder in folders:
        for path in _checkpoint_files(folder):
            name = os.path.basename(path.rstrip("/"))
            (last_like if name.startswith(tuple(last_names)) else others).add(_normalized(path))
    last_like |= {_normalized(cb.ckpt_path) for cb in trainer.callbacks if isinstance(cb, OnExceptionCheckpoint)}
    hpc = hpc_resume_path(str(trainer.default_root_dir))
    if hpc is not None:
        last_like.add(_normalized(hpc))
    # files of earlier jobs in the same directories are older than this run's record
    of_this_run = {p for p in last_like | others if (t := _modified(p)) is not None and t >= started}
    if not of_this_run:
        return None
    return newest_resumable_checkpoint(trainer, last_like & of_this_run, (others - last_like) & of_this_run,
                                       weights_only)


def _checkpoint_dirs(trainer: Trainer) -> list[str]:
    """The directories this attempt's ``ModelCheckpoint`` callbacks write full checkpoints to."""
    from torchbolt.trainer.ckpt_path import _normalized

    dirs: list[str] = []
    for callback in trainer.checkpoint_callbacks:
        resolve = getattr(callback, "_resolve_dirpath", None)
        if getattr(callback, "save_weights_only", False) or not callable(resolve):
            continue  # weights-only files cannot resume a fit
        folder = _normalized(str(resolve(trainer)))
        if folder not in dirs:
            dirs.append(folder)
    return dirs


def _checkpoint_files(folder: str) -> list[str]:
    """The complete ``.ckpt`` files in ``folder`` (hidden files are unfinished writes)."""
    fs = get_filesystem(folder)
    if not fs.isdir(folder):
        return []
    found = []
    for entry in fs.ls(folder, detail=False):
        name = os.path.basename(str(entry).rstrip("/"))
        if name.endswith(".ckpt") and not name.startswith("."):
            found.append(_join(folder, name))
    return found


def _start_record(path: str, run_id: str, fit_calls: list[list[str]]) -> None:
    """A new record whose ``started`` is its own modification time, so that it compares with the
    checkpoint files' times on the filesystem's clock, not this machine's."""
    from torchbolt.trainer.ckpt_path import _modified

    record: dict[str, Any] = {"run_id": run_id, "started": None, "fit_calls": fit_calls}
    _write_json(path, record)
    record["started"] = _modified(path)
    _write_json(path, record)


def _read_record(path: str) -> dict[str, Any] | None:
    """The record at ``path``, or ``None`` when there is none or it is not one (an interrupted first write)."""
    fs = get_filesystem(path)
    if not fs.exists(path):
        return None
    try:
        with fs.open(path, "r") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if (not isinstance(record, dict) or not isinstance(record.get("run_id"), str)
            or not isinstance(record.get("started"), (int, float)) or not isinstance(record.get("fit_calls"), list)):
        return None
    # the checkpoint directories of each `fit` call, in call order
    record["fit_calls"] = [[d for d in dirs if isinstance(d, str)] if isinstance(dirs, list) else []
                           for dirs in record["fit_calls"]]
    return record


def _write_json(path: str, value: dict[str, Any]) -> None:
    fs = get_filesystem(path)
    parent = os.path.dirname(path) if "://" not in path else path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    text = json.dumps(value, indent=1)
    if "://" in path:
        with fs.open(path, "w") as f:
            f.write(text)
        return
    # a reader never sees half a record
    tmp = os.path.join(parent, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}" if "://" in folder else os.path.join(folder, name)
