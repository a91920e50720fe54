"""Every example runs in ``--fast`` mode in a subprocess and reaches its documented outcome."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from torchbolt.utilities.imports import module_available

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CLI_MAIN = EXAMPLES / "cli" / "main.py"
CLI_CONFIGS = EXAMPLES / "cli" / "configs"


def run_example(env: dict[str, str], script: Path, *args: str) -> str:
    # tiny models gain nothing from intra-op threads, and on a shared 2-core machine the threads' spinning
    # makes these runs several times slower
    env = {**env, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def result(stdout: str, **match: str) -> dict[str, str]:
    """The ``key=value`` pairs of the last ``RESULT`` line (whose pairs include ``match``)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("RESULT "):
            pairs = dict(item.split("=", 1) for item in line.split()[1:])
            if all(pairs.get(k) == v for k, v in match.items()):
                return pairs
    raise AssertionError(f"no RESULT line matching {match} in:\n{stdout[-3000:]}")


def test_digits_reaches_high_test_accuracy(subprocess_env):
    out = run_example(subprocess_env, EXAMPLES / "digits.py", "--fast")
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", out)[1])
    assert accuracy > 0.85


def test_autoencoder_reconstruction_loss_decreases(subprocess_env):
    values = result(run_example(subprocess_env, EXAMPLES / "autoencoder.py", "--fast"))
    initial, final = float(values["initial_val_loss"]), float(values["final_val_loss"])
    assert final < 0.5 * initial


def test_gan_samples_have_image_shape_and_losses_are_finite(subprocess_env):
    values = result(run_example(subprocess_env, EXAMPLES / "gan.py", "--fast"))
    assert values["samples_shape"] == "16x1x8x8"
    assert all(math.isfinite(float(values[key])) for key in ("d_loss", "g_loss", "real_score", "fake_score"))
    # both optimizers stepped on every batch
    assert int(values["optimizer_steps"]) == 2 * int(values["batches"]) > 0


def test_char_lm_perplexity_drops(subprocess_env):
    values = result(run_example(subprocess_env, EXAMPLES / "char_lm.py", "--fast"))
    vocab, initial, final = int(values["vocab_size"]), float(values["initial_perplexity"]), float(values["final_perplexity"])
    assert initial > 0.5 * vocab  # an untrained model is about as good as a uniform guess
    assert final < initial / 3


@pytest.mark.skipif(not module_available("transformers"), reason="transformers is not installed")
def test_bert_classifier_learns_the_sentiment_rule(subprocess_env):
    values = result(run_example(subprocess_env, EXAMPLES / "bert_classifier.py", "--fast"))
    assert float(values["test_accuracy"]) > 0.9


def test_cli_example_fits_saves_its_config_then_tests_from_it(tmp_path, subprocess_env):
    out = run_example(subprocess_env, CLI_MAIN, "fit", "--config", str(CLI_CONFIGS / "digits.yaml"), "--fast",
                      f"--trainer.default_root_dir={tmp_path}")
    fit = result(out, subcommand="fit")
    assert float(fit["val_acc"]) > 0.85
    log_dir = Path(fit["log_dir"])
    saved = yaml.safe_load((log_dir / "config.yaml").read_text())
    assert saved["seed_everything"] == 42 and saved["optimizer"]["class_path"].endswith("AdamW")
    assert saved["trainer"]["max_epochs"] == 3  # --fast is applied before the config is saved

    out = run_example(subprocess_env, CLI_MAIN, "test", "--config", str(log_dir / "config.yaml"),
                      "--ckpt_path", str(log_dir / "final.ckpt"), "--trainer.logger=false")
    assert float(result(out, subcommand="test")["test_acc"]) > 0.85


def test_cli_example_configs_merge_in_order(subprocess_env):
    out = run_example(subprocess_env, CLI_MAIN, "fit", "--config", str(CLI_CONFIGS / "digits.yaml"),
                      "--config", str(CLI_CONFIGS / "sgd.yaml"), "--print_config")
    config = yaml.safe_load(out)
    assert config["optimizer"]["class_path"] == "torch.optim.SGD" and config["optimizer"]["init_args"]["momentum"] == 0.9
    assert config["model"]["hidden"] == 256  # from sgd.yaml
    assert config["lr_scheduler"]["init_args"]["T_max"] == 20  # only digits.yaml sets it


def test_ddp_example_trains_on_two_processes(subprocess_env, tmp_path):
    env = {**subprocess_env, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / "ddp.py"), "--fast"], env=env, capture_output=True,
                          text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    values = result(proc.stdout)
    assert values["world_size"] == "2"
    # 1257 training samples split over 2 ranks, batches of 32: 20 steps per epoch, 4 epochs
    assert int(values["steps"]) == 80
    assert float(values["test_acc"]) > 0.85
