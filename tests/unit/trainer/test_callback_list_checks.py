"""How the Trainer assembles its callback list: entry-point callbacks, unique state keys, the max_time Timer."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import torchbolt as pl
from torchbolt.callbacks import Callback, Timer


class _Stateful(Callback):
    def __init__(self, key: str) -> None:
        self._key = key

    @property
    def state_key(self) -> str:
        return self._key

    def state_dict(self) -> dict[str, int]:
        return {"seen": 1}


def test_two_stateful_callbacks_with_one_state_key_are_refused() -> None:
    with pytest.raises(RuntimeError, match="more than one stateful callback of type `_Stateful`.*'same'"):
        pl.Trainer(callbacks=[_Stateful("same"), _Stateful("same")], logger=False)
    pl.Trainer(callbacks=[_Stateful("a"), _Stateful("b")], logger=False)  # distinct keys are fine

    class Stateless(Callback):
        state_key = "same"  # type: ignore[assignment]

    pl.Trainer(callbacks=[Stateless(), Stateless()], logger=False)  # nothing to overwrite in a checkpoint


def test_max_time_timer_stores_seconds_and_a_user_timer_wins(caplog: pytest.LogCaptureFixture) -> None:
    trainer = pl.Trainer(max_time={"seconds": 1337}, logger=False)
    (timer,) = [cb for cb in trainer.callbacks if isinstance(cb, Timer)]
    assert timer._duration == 1337
    mine = Timer(duration="00:00:00:05")
    with caplog.at_level(logging.INFO, logger="torchbolt"):
        trainer = pl.Trainer(max_time={"seconds": 1337}, callbacks=[mine], logger=False)
    assert [cb for cb in trainer.callbacks if isinstance(cb, Timer)] == [mine]
    assert "callbacks list already contains a Timer" in caplog.text


def test_entry_point_factories_add_callbacks(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    # a real installed-package layout: a module and its dist-info with an entry_points.txt
    (tmp_path / "extra_callbacks.py").write_text(textwrap.dedent("""
        from torchbolt.callbacks import Callback

        class Greeter(Callback):
            pass

        def two():
            return [Greeter(), Greeter()]

        def none():
            return None
    """))
    dist = tmp_path / "extra_callbacks-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: extra-callbacks\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[lightning.pytorch.callbacks_factory]\ntwo = extra_callbacks:two\nnothing = extra_callbacks:none\n"
    )
    script = textwrap.dedent("""
        import torchbolt as pl
        first = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                           enable_model_summary=False)
        second = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False)
        print([type(cb).__name__ for cb in first.callbacks], first.callbacks[0] is not second.callbacks[0])
    """)
    env = dict(subprocess_env)
    env["PYTHONPATH"] = str(tmp_path) + os.pathsep + env["PYTHONPATH"]
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['Greeter', 'Greeter'] True"
