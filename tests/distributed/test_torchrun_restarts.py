"""A self-healing run: under `torchrun --max-restarts`, a worker SIGKILLed mid-epoch is restarted with the
rest of its group, `trainer.fit(model)` resumes by itself from the run's newest checkpoint, and the final
weights equal those of an uninterrupted run, bit for bit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from _launch import SCRIPTS, free_port, script_env, start, stop_group


@pytest.mark.parametrize("on_exception", [False, True], ids=["model-checkpoint", "with-on-exception-checkpoint"])
def test_torchrun_restart_after_a_sigkill_resumes_and_ends_with_the_uninterrupted_weights(tmp_path: Path,
                                                                                         on_exception: bool) -> None:
    # with an `OnExceptionCheckpoint`, rank 0 saves when it finds its peer gone: one more candidate
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--max-restarts=3",
               "--rdzv-backend=c10d", f"--rdzv-endpoint=localhost:{free_port()}", "--monitor-interval=0.2",
               str(SCRIPTS / "elastic_job.py"), str(tmp_path)]
    proc = start(command, env=script_env(ON_EXCEPTION=int(on_exception)))
    try:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-4000:]
    finally:
        stop_group(proc)
    assert (tmp_path / "killed").exists(), "rank 1 was never killed"
    first_dir = tmp_path / "run" / "lightning_logs" / "version_0" / "checkpoints"
    assert torch.load(first_dir / "last.ckpt", weights_only=True)["global_step"] == 4
    for rank in range(2):
        summary = json.loads((tmp_path / "run" / f"final.rank{rank}.json").read_text())
        # every rank was restarted once and loaded a checkpoint of the first attempt (the last one: step 4 of 16)
        assert summary["step"] == 16 and summary["restart"] == 1
        if on_exception:
            assert summary["ckpt_path"] in (str(first_dir / "last.ckpt"),
                                            str(tmp_path / "run" / "on_exception" / "on_exception.ckpt"))
        else:
            assert summary["ckpt_path"] == str(first_dir / "last.ckpt")
        reference = torch.load(tmp_path / "ref" / f"final.rank{rank}.pt", weights_only=True)
        healed = torch.load(tmp_path / "run" / f"final.rank{rank}.pt", weights_only=True)
        assert reference.keys() == healed.keys()
        for name in reference:
            assert torch.equal(reference[name], healed[name]), f"{name} differs from the uninterrupted run"
