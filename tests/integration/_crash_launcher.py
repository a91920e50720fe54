"""Kill real training processes with SIGKILL and check what they leave behind (run by test_sigkill.py).

The launcher imports torch once and ``fork()`` s one training process per run (so each run starts in
milliseconds); every run is a real process that receives a real ``SIGKILL`` - from this launcher at
a random moment, or from itself at a chosen batch. Results are printed as one JSON line.

    python _crash_launcher.py random-kills DIR --kills 10 --seed 0
    python _crash_launcher.py kill-resume DIR --scenario mid-epoch     # or --scenario all
    python _crash_launcher.py kill-between-writes DIR
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

from torchbolt.callbacks import Callback, ModelCheckpoint
from torchbolt.utilities.cloud_io import TEMP_FILE_PATTERN, _load

# each scenario: model arguments, trainer arguments, and where the process kills itself
SCENARIOS: dict[str, dict[str, Any]] = {
    "mid-epoch": {"model": {}, "trainer": {}, "kill": ("batch", 5)},
    "mid-accumulation": {"model": {}, "trainer": {"accumulate_grad_batches": 3}, "kill": ("batch", 13)},
    "epoch-boundary": {"model": {}, "trainer": {}, "kill": ("epoch_start", 1)},
    "two-workers": {"model": {"workers": 2}, "trainer": {"max_epochs": 2}, "kill": ("batch", 11)},
    "epoch-scheduler-val-mid-epoch": {"model": {"scheduler_interval": "epoch"},
                                      "trainer": {"val_check_interval": 0.5}, "kill": ("batch", 10)},
}


class ReportingCheckpoint(ModelCheckpoint):
    """Writes ``<path>\\t<global_step>`` to a pipe after each checkpoint is complete."""

    def __init__(self, report_fd: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._report_fd = report_fd

    def _save_checkpoint(self, trainer: Any, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        os.write(self._report_fd, f"{os.path.basename(filepath)}\t{trainer.global_step}\n".encode())


class KillAt(Callback):
    """SIGKILLs its own process at the start of a given global batch or epoch."""

    def __init__(self, where: str, index: int) -> None:
        self.where, self.index, self.batches = where, index, 0

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self.where == "batch" and self.batches == self.index:
            os.kill(os.getpid(), signal.SIGKILL)
        self.batches += 1

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if self.where == "epoch_start" and trainer.current_epoch == self.index:
            os.kill(os.getpid(), signal.SIGKILL)


class KillBeforeLast(ModelCheckpoint):
    """A top-k ``ModelCheckpoint`` that SIGKILLs its process in the window between two writes of one step:
    the top-k file of the step is complete (renamed into place), ``last`` is not written yet.

    It kills at the first step from ``kill_from`` on at which a top-k file was written, after recording
    ``<top-k file>\t<global_step>`` in ``report``.
    """

    def __init__(self, kill_from: int | None = None, report: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kill_from, self.report = kill_from, report

    def _save_last_checkpoint(self, trainer: Any, candidates: Any) -> None:
        step = trainer.global_step
        if (self.kill_from is not None and step >= self.kill_from and self._last_global_step_saved == step
                and os.path.isfile(self._last_checkpoint_saved)):
            assert self.report is not None
            with open(self.report, "w") as f:
                f.write(f"{self._last_checkpoint_saved}\t{step}")
            os.kill(os.getpid(), signal.SIGKILL)
        super()._save_last_checkpoint(trainer, candidates)


class StartStep(Callback):
    """Records where a fit starts training (after any checkpoint was restored)."""

    def __init__(self) -> None:
        self.step: int | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.step = trainer.global_step


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


def _train(directory: str, out: str | None, model: dict[str, Any], trainer: dict[str, Any], report_fd: int | None,
           kill: tuple[str, int] | None, resume: bool) -> None:
    torch.set_num_threads(1)
    if report_fd is None:
        report_fd = os.open(os.devnull, os.O_WRONLY)
    # the same callback class in every run, so its state (top-k bookkeeping) is restored on resume
    callbacks: list[Any] = [ReportingCheckpoint(report_fd, dirpath=directory, every_n_train_steps=1, save_last=True)]
    if kill is not None:
        callbacks.append(KillAt(*kill))
    final, _ = fit(model, trainer, callbacks, ckpt_path="last" if resume else None)
    if out is not None:
        torch.save(final, out)


def _wait(pid: int) -> str:
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit {os.WEXITSTATUS(status)}"


def _check_directory(directory: str) -> dict[str, Any]:
    """Every checkpoint file loads (weights-only); temp files of interrupted writes are only counted."""
    found: dict[str, Any] = {"unloadable": [], "temp_files": 0, "steps": {}}
    for name in sorted(os.listdir(directory)):
        if TEMP_FILE_PATTERN.match(name):
            found["temp_files"] += 1
            continue
        try:
            found["steps"][name] = int(_load(os.path.join(directory, name), map_location="cpu")["global_step"])
        except Exception as e:  # any failure to load is what the test reports
            found["unloadable"].append(f"{name}: {type(e).__name__}: {e}")
    return found


def random_kills(directory: str, kills: int, seed: int) -> dict[str, Any]:
    """Kill runs at random moments until ``kills`` kills happened; each run resumes from "last".

    A run that finishes before its kill (the machine was faster than expected) must end with the
    reference weights; the next runs then start over in a fresh directory.
    """
    model: dict[str, Any] = {"n": 80, "width": 64}
    trainer: dict[str, Any] = {"max_epochs": 3, "val_check_interval": 0.5}
    reference_out = os.path.join(directory, "reference.pt")
    started = time.monotonic()
    status = _wait(_in_child(_train, os.path.join(directory, "reference"), reference_out, model, trainer, None, None,
                             False))
    duration = time.monotonic() - started
    reference = torch.load(reference_out)
    result: dict[str, Any] = {"reference": status, "kills": 0, "unloadable": [], "missing_last": [], "other": [],
                              "temp_files_seen": 0, "finished_before_kill": 0}
    rng = random.Random(seed)
    episode = 0
    work_dir = os.path.join(directory, f"killed-{episode}")
    for _ in range(3 * kills):
        if result["kills"] >= kills:
            break
        read_fd, write_fd = os.pipe()
        out = os.path.join(directory, f"final-{episode}.pt")
        pid = _in_child(_train, work_dir, out, model, trainer, write_fd, None, True)
        os.close(write_fd)
        time.sleep(rng.uniform(0.02, max(0.05, duration / (2 * kills))))
        os.kill(pid, signal.SIGKILL)
        outcome = _wait(pid)
        with os.fdopen(read_fd) as pipe:
            reports = [line.split("\t") for line in pipe.read().splitlines()]
        if outcome == "exit 0":
            result["finished_before_kill"] += 1
            difference = first_difference(reference, torch.load(out))
            if difference is not None:
                result["other"].append(f"a run resumed after kills ended with different weights: {difference}")
            episode += 1
            work_dir = os.path.join(directory, f"killed-{episode}")
            continue
        if outcome != f"signal {signal.SIGKILL}":
            result["other"].append(f"run ended with {outcome}")
            continue
        result["kills"] += 1
        found = _check_directory(work_dir) if os.path.isdir(work_dir) else {"unloadable": [], "temp_files": 0,
                                                                               "steps": {}}
        result["temp_files_seen"] += found["temp_files"]
        result["unloadable"] += found["unloadable"]
        last_reported = [int(step) for name, step in reports if name == "last.ckpt"]
        if last_reported and found["steps"].get("last.ckpt", -1) < max(last_reported):
            result["missing_last"].append(f"last.ckpt missing or older than step {max(last_reported)}: {found['steps']}")
    final_out = os.path.join(directory, "final.pt")
    result["final"] = _wait(_in_child(_train, work_dir, final_out, model, trainer, None, None, True))
    result["temp_files_after_restart"] = _check_directory(work_dir)["temp_files"]
    if os.path.exists(final_out):
        result["difference"] = first_difference(reference, torch.load(final_out))
    return result


def kill_resume(directory: str, scenario: str) -> dict[str, Any]:
    spec = SCENARIOS[scenario]
    reference_out = os.path.join(directory, "reference.pt")
    resumed_out = os.path.join(directory, "resumed.pt")
    result: dict[str, Any] = {"scenario": scenario}
    result["reference"] = _wait(_in_child(_train, os.path.join(directory, "reference"), reference_out,
                                          spec["model"], spec["trainer"], None, None, False))
    work_dir = os.path.join(directory, "killed")
    result["killed"] = _wait(_in_child(_train, work_dir, None, spec["model"], spec["trainer"], None, spec["kill"],
                                       False))
    result["checkpoints_left"] = sorted(os.listdir(work_dir)) if os.path.isdir(work_dir) else []
    result["resumed"] = _wait(_in_child(_train, work_dir, resumed_out, spec["model"], spec["trainer"], None, None,
                                        True))
    if os.path.exists(reference_out) and os.path.exists(resumed_out):
        result["difference"] = first_difference(torch.load(reference_out), torch.load(resumed_out))
    return result


def _train_between_writes(directory: str, out: str, kill_from: int | None, report: str | None, resume: bool
                          ) -> None:
    torch.set_num_threads(1)
    # top-2 by the step loss every 3 steps, plus `last`: both files are written at the same step
    checkpoint = KillBeforeLast(kill_from, report, dirpath=directory, monitor="train_loss", save_top_k=2,
                                every_n_train_steps=3, save_last=True)
    start = StartStep()
    final, trainer = fit({}, {"max_epochs": 2}, [checkpoint, start], ckpt_path="last" if resume else None)
    torch.save({"weights": final, "ckpt_path": trainer.ckpt_path, "start_step": start.step,
                "global_step": trainer.global_step}, out)


def kill_between_writes(directory: str) -> dict[str, Any]:
    """For a kill at the first save (no ``last`` yet) and at a later one (an older ``last``): an
    uninterrupted run, a run killed between the top-k write and the ``last`` write of one step, and
    ``fit(ckpt_path="last")`` on its directory."""
    reference_out = os.path.join(directory, "reference.pt")
    result: dict[str, Any] = {"reference": _wait(_in_child(_train_between_writes, os.path.join(directory, "reference"),
                                                           reference_out, None, None, False))}
    reference = torch.load(reference_out)
    for case, kill_from in (("no-last", 1), ("older-last", 8)):
        work_dir = os.path.join(directory, case)
        report = os.path.join(directory, f"{case}.killed")
        found: dict[str, Any] = {"killed": _wait(_in_child(_train_between_writes, work_dir, os.path.join(
            directory, f"{case}-unused.pt"), kill_from, report, False))}
        if not os.path.exists(report):  # the run never reached the window: the test reports it
            result[case] = found
            continue
        with open(report) as f:
            killed_file, killed_step = f.read().split("\t")
        found["killed_file"], found["killed_step"] = killed_file, int(killed_step)
        left = _check_directory(work_dir)
        found["unloadable"] = left["unloadable"]
        found["last_step"] = left["steps"].get("last.ckpt")
        resumed_out = os.path.join(directory, f"{case}-resumed.pt")
        found["resumed"] = _wait(_in_child(_train_between_writes, work_dir, resumed_out, None, None, True))
        if os.path.exists(resumed_out):
            resumed = torch.load(resumed_out)
            found["resumed_from"], found["start_step"] = resumed["ckpt_path"], resumed["start_step"]
            found["final_step"] = (reference["global_step"], resumed["global_step"])
            found["difference"] = first_difference(reference["weights"], resumed["weights"])
        result[case] = found
    return result


def _warm_up(directory: str) -> None:
    """One short fit in the launcher, so that forked runs do not each pay for lazy imports."""
    fit({}, {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1},
        [ModelCheckpoint(dirpath=os.path.join(directory, "warm-up"), save_last=True)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["random-kills", "kill-resume", "kill-between-writes"])
    parser.add_argument("directory")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenario", choices=[*sorted(SCENARIOS), "all"])
    args = parser.parse_args()
    torch.set_num_threads(1)  # no thread pool in the launcher: forked children start clean
    _warm_up(args.directory)
    if args.mode == "random-kills":
        result = random_kills(args.directory, args.kills, args.seed)
    elif args.mode == "kill-between-writes":
        result = kill_between_writes(args.directory)
    else:
        names = sorted(SCENARIOS) if args.scenario == "all" else [args.scenario]
        result = {}
        for name in names:
            os.makedirs(os.path.join(args.directory, name))
            result[name] = kill_resume(os.path.join(args.directory, name), name)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
