"""The spawn and fork launchers run every rank in new processes and hand the results back to the caller."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _launch import script_env
from common import Regressor, trainer_kwargs
from torch.multiprocessing import ProcessRaisedException

import torchbolt as pl


def _reference() -> dict[str, torch.Tensor]:
    pl.seed_everything(7)
    model = Regressor(batch_size=8)
    pl.Trainer(**trainer_kwargs(devices=1)).fit(model)
    return model.state_dict()


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_fork"])
def test_multiprocessing_launchers_train_and_return_the_weights(strategy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    expected = _reference()
    pl.seed_everything(7)
    model = Regressor(batch_size=4)
    trainer = pl.Trainer(**trainer_kwargs(devices=2, strategy=strategy))
    trainer.fit(model)
    assert trainer.global_step == 4 and trainer.state.finished
    for key, value in expected.items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    assert not torch.distributed.is_initialized(), "the caller's process must not join the process group"


class _FailsOnRankOne(Regressor):
    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        if self.global_rank == 1:
            raise ValueError("rank one cannot go on")
        return super().training_step(batch, batch_idx)


def test_a_failing_spawned_rank_raises_its_error_in_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    trainer = pl.Trainer(**trainer_kwargs(devices=2, strategy="ddp_fork"))
    with pytest.raises(ProcessRaisedException, match="rank one cannot go on") as exc:
        trainer.fit(_FailsOnRankOne())
    # printed as the last line of the traceback, whichever process torch reported
    assert exc.value.__notes__[-1] == (
        "[torchbolt] rank 1 failed first, with ValueError: rank one cannot go on; its traceback is printed above."
    )


def test_ddp_from_python_c_says_which_strategy_to_use(tmp_path: Path) -> None:
    code = (
        "import torchbolt as pl\n"
        "from torchbolt.demos.boring_classes import BoringModel\n"
        "pl.Trainer(accelerator='cpu', devices=2, strategy='ddp', logger=False, max_steps=1).fit(BoringModel())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=script_env(), capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode != 0
    assert "strategy='ddp_spawn'" in proc.stderr and "torchrun" in proc.stderr
