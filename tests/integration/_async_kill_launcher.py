"""SIGKILL processes while they write checkpoints in the background (run by test_async_checkpoint_sigkill.py).

The launcher imports torch once and ``fork()`` s each writing process, then kills it with a real
``SIGKILL`` after a random delay, so that most kills land while the writer thread is serializing or
writing a file. Results are printed as one JSON line.

    python _async_kill_launcher.py plugin DIR --kills 8 --seed 0    # AsyncCheckpointIO saving in a loop
    python _async_kill_launcher.py fit DIR --kills 5 --seed 0       # fits with ModelCheckpoint(async_save=True)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _resume_workload import first_difference, fit

from torchbolt.callbacks import ModelCheckpoint
from torchbolt.plugins import AsyncCheckpointIO
from torchbolt.utilities.cloud_io import TEMP_FILE_PATTERN, _load

PATHS = 3  # the plug-in loop writes ckpt-0 .. ckpt-2 in turn
TENSORS = 6
NUMEL = 1_000_000  # 6 x 4 MB per checkpoint


def _in_child(fn: Any, *args: Any) -> int:
    """Run ``fn(*args)`` in a forked process; return its pid (the child never returns)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn(*args)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    return pid


def _wait(pid: int) -> str:
    _, status = os.waitpid(pid, 0)
    return f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"


def _reports(read_fd: int) -> list[str]:
    with os.fdopen(read_fd) as pipe:
        return pipe.read().split()


# ---------------------------------------------------------------------- the plug-in in a loop
def _save_forever(directory: str, report_fd: int) -> None:
    """Save number n to ckpt-{n % 3}: every tensor filled with n, then changed in place right after
    the call returns (as training does); report n once ``save_checkpoint`` returned."""
    torch.set_num_threads(1)
    io = AsyncCheckpointIO()
    state = {"tensors": [torch.zeros(NUMEL) for _ in range(TENSORS)], "n": 0}
    n = 0
    while True:
        for tensor in state["tensors"]:
            tensor.fill_(float(n))
        state["n"] = n
        io.save_checkpoint(state, os.path.join(directory, f"ckpt-{n % PATHS}.ckpt"))
        os.write(report_fd, f"{n}\n".encode())
        for tensor in state["tensors"]:
            tensor.fill_(-1.0)  # a torn snapshot would put these values in a file
        n += 1


def _check_plugin_files(directory: str, returned: list[int]) -> dict[str, Any]:
    found: dict[str, Any] = {"unloadable": [], "inconsistent": [], "lost": [], "temp_files": 0}
    numbers: dict[str, int] = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if TEMP_FILE_PATTERN.match(name):
            found["temp_files"] += 1
            os.remove(path)  # as the next run's ModelCheckpoint would
            continue
        try:
            loaded = _load(path)
        except Exception as e:  # any failure to load is what the test reports
            found["unloadable"].append(f"{name}: {type(e).__name__}: {e}")
            continue
        n = int(loaded["n"])
        numbers[name] = n
        if name != f"ckpt-{n % PATHS}.ckpt" or any(not torch.all(t == float(n)) for t in loaded["tensors"]):
            found["inconsistent"].append(f"{name} holds number {n} with other values")
    if len(returned) >= 2:
        # the call that returned last waited for the write before it: that file must be complete,
        # with that number or a later one written to the same path
        durable = returned[-2]
        name = f"ckpt-{durable % PATHS}.ckpt"
        if numbers.get(name, -1) < durable:
            found["lost"].append(f"{name} should hold number >= {durable}, has {numbers.get(name)}")
    return found


def plugin_kills(directory: str, kills: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    result: dict[str, Any] = {"kills": 0, "other": [], "unloadable": [], "inconsistent": [], "lost": [],
                              "saves_returned": 0, "temp_files_seen": 0}
    for episode in range(kills):
        work_dir = os.path.join(directory, f"plugin-{episode}")
        os.makedirs(work_dir)
        read_fd, write_fd = os.pipe()
        pid = _in_child(_save_forever, work_dir, write_fd)
        os.close(write_fd)
        time.sleep(rng.uniform(0.2, 1.2))
        os.kill(pid, signal.SIGKILL)
        outcome = _wait(pid)
        returned = [int(n) for n in _reports(read_fd)]
        if outcome != f"signal {signal.SIGKILL}":
            result["other"].append(f"writer ended with {outcome}")
            continue
        result["kills"] += 1
        result["saves_returned"] += len(returned)
        found = _check_plugin_files(work_dir, returned)
        result["temp_files_seen"] += found["temp_files"]
        for key in ("unloadable", "inconsistent", "lost"):
            result[key] += found[key]
    return result


# ---------------------------------------------------------------------- fits with ModelCheckpoint(async_save=True)
class ReportingCheckpoint(ModelCheckpoint):
    """Reports ``<name>\\t<step>`` once ``trainer.save_checkpoint`` returned (the write may be in flight)."""

    def __init__(self, report_fd: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._report_fd = report_fd

    def _save_checkpoint(self, trainer: Any, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        os.write(self._report_fd, f"{os.path.basename(filepath)}\t{trainer.global_step}\n".encode())


MODEL: dict[str, Any] = {"width": 250_000}  # ~2.75M parameters, ~11 MB per checkpoint
TRAINER: dict[str, Any] = {"max_epochs": 2}


def _train(directory: str, out: str | None, report_fd: int | None, resume: bool) -> None:
    torch.set_num_threads(1)
    if report_fd is None:
        report_fd = os.open(os.devnull, os.O_WRONLY)
    checkpoint = ReportingCheckpoint(report_fd, dirpath=directory, monitor="step", mode="max", save_top_k=2,
                                     every_n_train_steps=1, save_last="link", async_save=True)
    final, _ = fit(MODEL, TRAINER, [checkpoint], ckpt_path="last" if resume else None)
    if out is not None:
        torch.save(final, out)


def fit_kills(directory: str, kills: int, seed: int) -> dict[str, Any]:
    """Fits killed at random moments, each resuming from "last"; then one to the end, compared with
    an uninterrupted fit."""
    reference_out = os.path.join(directory, "reference.pt")
    started = time.monotonic()
    result: dict[str, Any] = {"reference": _wait(_in_child(_train, os.path.join(directory, "reference"),
                                                           reference_out, None, False))}
    duration = time.monotonic() - started
    result.update({"kills": 0, "other": [], "unloadable": [], "missing_last": [], "finished_before_kill": 0,
                   "temp_files_seen": 0})
    rng = random.Random(seed)
    work_dir = os.path.join(directory, "killed")
    durable_last = -1
    for _ in range(kills):
        read_fd, write_fd = os.pipe()
        pid = _in_child(_train, work_dir, None, write_fd, True)
        os.close(write_fd)
        time.sleep(rng.uniform(0.2, max(0.3, duration / 3)))
        os.kill(pid, signal.SIGKILL)
        outcome = _wait(pid)
        with os.fdopen(read_fd) as pipe:
            reports = [line.split("\t") for line in pipe.read().splitlines()]
        if outcome == "exit 0":
            result["finished_before_kill"] += 1
            break
        if outcome != f"signal {signal.SIGKILL}":
            result["other"].append(f"run ended with {outcome}")
            continue
        result["kills"] += 1
        steps: dict[str, int] = {}
        for name in sorted(os.listdir(work_dir)) if os.path.isdir(work_dir) else []:
            if TEMP_FILE_PATTERN.match(name):
                result["temp_files_seen"] += 1
                continue
            try:
                steps[name] = int(_load(os.path.join(work_dir, name))["global_step"])
            except Exception as e:  # any failure to load (or a dangling link) is what the test reports
                result["unloadable"].append(f"{name}: {type(e).__name__}: {e}")
        # a save that returned after another one means that one (and the link queued after it) is done
        for name, step in reports[:-1]:
            if name == "last.ckpt":
                durable_last = max(durable_last, int(step))
        if durable_last >= 0 and steps.get("last.ckpt", -1) < durable_last:
            result["missing_last"].append(f"last.ckpt missing or older than step {durable_last}: {steps}")
        durable_last = max(durable_last, steps.get("last.ckpt", -1))
    final_out = os.path.join(directory, "final.pt")
    result["final"] = _wait(_in_child(_train, work_dir, final_out, None, True))
    if os.path.exists(final_out) and os.path.exists(reference_out):
        result["difference"] = first_difference(torch.load(reference_out), torch.load(final_out))
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["plugin", "fit"])
    parser.add_argument("directory")
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # no thread pool in the launcher: forked children start clean
    if args.mode == "plugin":
        result = plugin_kills(args.directory, args.kills, args.seed)
    else:
        fit({}, {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1})  # warm up lazy imports
        result = fit_kills(args.directory, args.kills, args.seed)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
