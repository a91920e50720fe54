"""LightningCLI running subcommands in-process: fit/validate/test/predict, hooks, config saving, ckpt_path."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers.cli_models import CLIDataModule, CLIModel, DeepCLIModel, StageRecorder
from torchbolt.cli import LightningCLI, SaveConfigCallback
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.imports import module_available

QUIET = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
TINY = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
        "--trainer.num_sanity_val_steps=0", *QUIET]


def run(*args: str, cli_class: type[LightningCLI] = LightningCLI, **kwargs) -> LightningCLI:
    kwargs.setdefault("model_class", CLIModel)
    kwargs.setdefault("datamodule_class", CLIDataModule)
    return cli_class(args=list(args), **kwargs)


def printed_config(capsys: pytest.CaptureFixture, *args: str, flag: str = "--print_config", **kwargs) -> str:
    """What ``--print_config`` writes; it must exit with code 0 without running anything."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run(*args, flag, **kwargs)
    assert exc.value.code == 0
    return capsys.readouterr().out


# ---------------------------------------------------------------- subcommands
def test_fit_subcommand_trains_the_configured_model():
    cli = run("fit", *TINY, "--data.batch_size=4")
    assert cli.subcommand == "fit"
    assert cli.trainer.state.finished
    assert cli.trainer.global_step == 2
    assert "val_loss" in cli.trainer.callback_metrics


def test_fit_uses_the_optimizer_from_the_command_line():
    cli = run("fit", *TINY, "--optimizer=Adam", "--optimizer.lr=0.005", "--lr_scheduler=StepLR",
              "--lr_scheduler.step_size=1", "--lr_scheduler.gamma=0.5")
    optimizer = cli.trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0025)  # one epoch-interval step of gamma=0.5
    assert isinstance(cli.trainer.lr_scheduler_configs[0].scheduler, torch.optim.lr_scheduler.StepLR)


def test_validate_subcommand_runs_validation_only():
    cli = run("validate", *TINY)
    assert cli.trainer.global_step == 0
    assert "val_loss" in cli.trainer.callback_metrics


def test_test_subcommand_runs_the_test_loop():
    cli = run("test", *TINY, "--trainer.limit_test_batches=1", "--verbose=false")
    assert "test_loss" in cli.trainer.callback_metrics


def test_predict_subcommand_returns_predictions_to_after_predict():
    class PredictCLI(LightningCLI):
        def predict(self, **kwargs):
            self.predictions = self.trainer.predict(**kwargs)

    cli = run("predict", *TINY, "--trainer.limit_predict_batches=2", "--data.batch_size=4", cli_class=PredictCLI)
    assert [p.shape for p in cli.predictions] == [torch.Size([4]), torch.Size([4])]


def test_subcommand_hooks_run_around_the_trainer_method():
    events: list[str] = []

    class HookCLI(LightningCLI):
        def before_instantiate_classes(self):
            events.append("before_instantiate_classes")

        def after_instantiate_classes(self):
            events.append("after_instantiate_classes")

        def before_validate(self):
            events.append(f"before_validate:{self.trainer.state.finished}")

        def after_validate(self):
            events.append(f"after_validate:{self.trainer.state.finished}")

    run("validate", *TINY, cli_class=HookCLI)
    assert events == ["before_instantiate_classes", "after_instantiate_classes",
                      "before_validate:False", "after_validate:True"]


def test_fit_hooks_see_the_trained_model():
    steps: list[int] = []

    class FitCLI(LightningCLI):
        def before_fit(self):
            steps.append(self.trainer.global_step)

        def after_fit(self):
            steps.append(self.trainer.global_step)

    run("fit", *TINY, cli_class=FitCLI)
    assert steps == [0, 2]


# ---------------------------------------------------------------- --print_config
def test_print_config_shows_the_overrides(capsys):
    out = printed_config(capsys, "fit", "--model.lr=0.03", "--trainer.max_epochs=5", "--data.batch_size=64")
    config = yaml.safe_load(out)
    assert (config["model"]["lr"], config["trainer"]["max_epochs"], config["data"]["batch_size"]) == (0.03, 5, 64)
    assert config["seed_everything"] is True  # printed before any seed is picked
    assert out.startswith("# torchbolt==")


def test_print_config_round_trips(tmp_path, capsys):
    source = tmp_path / "extra.yaml"
    source.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "tests.helpers.cli_models.StageRecorder", "init_args": {"tag": "yaml"}}]}}))
    first = printed_config(capsys, "fit", "--config", str(source), "--model.hidden=5", "--trainer.max_epochs=2",
                           "--trainer.callbacks+=Timer", "--trainer.callbacks.duration=00:00:01:00",
                           "--optimizer=Adam", "--optimizer.lr=0.02", "--lr_scheduler=ReduceLROnPlateau",
                           "--lr_scheduler.monitor=val_loss", "--seed_everything=3")
    printed = tmp_path / "printed.yaml"
    printed.write_text(first)
    second = printed_config(capsys, "fit", "--config", str(printed))
    assert second == first
    config = yaml.safe_load(second)
    assert [cb["class_path"].rsplit(".", 1)[-1] for cb in config["trainer"]["callbacks"]] == ["StageRecorder", "Timer"]
    assert config["lr_scheduler"]["init_args"]["monitor"] == "val_loss"


def test_printed_config_rebuilds_the_same_objects(tmp_path, capsys):
    out = printed_config(capsys, "fit", "--model=DeepCLIModel", "--model.depth=4", "--data.batch_size=3",
                         *TINY, model_class=None)
    printed = tmp_path / "printed.yaml"
    printed.write_text(out)
    cli = run("fit", "--config", str(printed), "--trainer.max_epochs=0", model_class=None)
    assert type(cli.model) is DeepCLIModel and cli.model.depth == 4
    assert cli.datamodule.batch_size == 3


def test_print_config_skip_default_prints_only_changes(capsys):
    out = printed_config(capsys, "fit", "--model.lr=0.25", flag="--print_config=skip_default")
    assert yaml.safe_load(out) == {"model": {"lr": 0.25}}


# ---------------------------------------------------------------- SaveConfigCallback
def test_config_yaml_is_saved_to_the_log_dir_with_the_seed(tmp_path):
    cli = run("fit", *TINY[:-3], "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
              f"--trainer.default_root_dir={tmp_path / 'root'}", "--model.hidden=6")
    saved = Path(cli.trainer.log_dir) / "config.yaml"
    assert saved.is_file()
    assert saved.parent.name == "version_0"  # next to the default logger's files
    config = yaml.safe_load(saved.read_text())
    assert config["model"]["hidden"] == 6
    assert config["seed_everything"] == cli.config["fit"]["seed_everything"] == int(os.environ["PL_GLOBAL_SEED"])


def test_saved_config_repeats_the_run(tmp_path):
    first = run("fit", *TINY)
    weights = first.model.net[0].weight.detach().clone()
    saved = tmp_path / "config.yaml"
    os.rename(saved, tmp_path / "first.yaml")  # it was written to default_root_dir (cwd) without a logger
    os.environ.pop("PL_GLOBAL_SEED")
    second = run("fit", "--config", str(tmp_path / "first.yaml"))
    assert second.config["fit"]["seed_everything"] == first.config["fit"]["seed_everything"]
    assert torch.equal(second.model.net[0].weight, weights)


def test_existing_config_yaml_is_not_overwritten(tmp_path):
    (tmp_path / "config.yaml").write_text("keep: me\n")
    with pytest.raises(RuntimeError, match="expected .*config.yaml to NOT exist. Aborting to avoid overwriting"):
        run("fit", *TINY)
    assert (tmp_path / "config.yaml").read_text() == "keep: me\n"


def test_overwrite_true_replaces_config_yaml(tmp_path):
    (tmp_path / "config.yaml").write_text("keep: me\n")
    run("fit", *TINY, "--model.hidden=7", save_config_kwargs={"overwrite": True})
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["model"]["hidden"] == 7


def test_custom_config_filename(tmp_path):
    run("validate", *TINY, save_config_kwargs={"config_filename": "run.yaml"})
    assert (tmp_path / "run.yaml").is_file() and not (tmp_path / "config.yaml").exists()


def test_save_config_callback_none_saves_nothing(tmp_path):
    cli = run("fit", *TINY, save_config_callback=None)
    assert not (tmp_path / "config.yaml").exists()
    assert not any(isinstance(cb, SaveConfigCallback) for cb in cli.trainer.callbacks)


def test_fast_dev_run_saves_no_config(tmp_path):
    run("fit", *QUIET, "--trainer.fast_dev_run=true")
    assert not (tmp_path / "config.yaml").exists()


def test_save_config_subclass_hook_runs_once_on_global_zero(tmp_path):
    calls: list[str] = []

    class Recording(SaveConfigCallback):
        def save_config(self, trainer, pl_module, stage):
            calls.append(stage)

    run("fit", *TINY, save_config_callback=Recording, save_config_kwargs={"save_to_log_dir": False})
    assert calls == ["fit"]
    assert not (tmp_path / "config.yaml").exists()


def test_save_to_log_dir_false_without_override_is_an_error():
    with pytest.raises(ValueError, match="`save_to_log_dir=False` only makes sense when subclassing"):
        SaveConfigCallback(parser=None, config={}, save_to_log_dir=False)


def test_appended_callback_runs_during_fit():
    cli = run("fit", *TINY, "--trainer.callbacks+=StageRecorder", "--trainer.callbacks.tag=run")
    recorder = next(cb for cb in cli.trainer.callbacks if isinstance(cb, StageRecorder))
    assert recorder.stages == ["fit"]


# ---------------------------------------------------------------- --ckpt_path
def test_ckpt_path_restores_weights_and_model_hyperparameters(tmp_path):
    trained = run("fit", *TINY, "--model.hidden=5", save_config_callback=None)
    ckpt = str(tmp_path / "model.ckpt")
    trained.trainer.save_checkpoint(ckpt)
    # the model is configured with hidden=5 from the checkpoint, not the default 8
    cli = run("validate", *TINY, f"--ckpt_path={ckpt}", save_config_callback=None)
    assert cli.model.hparams.hidden == 5
    assert torch.equal(cli.model.net[0].weight, trained.model.net[0].weight)


def test_adapt_checkpoint_hparams_can_drop_values(tmp_path):
    trained = run("fit", *TINY, "--model.lr=0.3", save_config_callback=None)
    ckpt = str(tmp_path / "model.ckpt")
    trained.trainer.save_checkpoint(ckpt)

    class AdaptCLI(LightningCLI):
        def adapt_checkpoint_hparams(self, subcommand, checkpoint_hparams):
            checkpoint_hparams.pop("lr")
            return checkpoint_hparams

    cli = run("validate", *TINY, f"--ckpt_path={ckpt}", cli_class=AdaptCLI, save_config_callback=None)
    assert cli.model.hparams.lr == 0.1  # the default, not the checkpoint's 0.3


@pytest.mark.skipif(not module_available("tensorboard"), reason="tensorboard is not installed")
def test_logger_chosen_by_name_receives_config_yaml(tmp_path):
    cli = run("fit", *TINY[:-3], "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
              "--trainer.logger=TensorBoardLogger", f"--trainer.logger.save_dir={tmp_path / 'tb'}",
              "--trainer.logger.name=cli_run")
    assert type(cli.trainer.logger).__name__ == "TensorBoardLogger"
    saved = Path(cli.trainer.logger.log_dir) / "config.yaml"
    assert saved.is_file() and saved.parent.parent == tmp_path / "tb" / "cli_run"
    assert any(path.name.startswith("events.out.tfevents") for path in saved.parent.iterdir())


def _with_class_path(ckpt: Path, class_path: object, **extra: object) -> None:
    """Write into ``ckpt`` the ``_class_path`` entry that Lightning's CLI records in subclass mode."""
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["hyper_parameters"] = {**checkpoint["hyper_parameters"], "_class_path": class_path, **extra}
    torch.save(checkpoint, ckpt)


def test_ckpt_class_path_of_an_imported_model_subclass_builds_that_class(tmp_path):
    trained = run("fit", *TINY, "--model=DeepCLIModel", "--model.hidden=5", subclass_mode_model=True,
                  save_config_callback=None)
    ckpt = tmp_path / "model.ckpt"
    trained.trainer.save_checkpoint(ckpt)
    _with_class_path(ckpt, "tests.helpers.cli_models.DeepCLIModel", depth=3)
    # the command line asks for the base class; the checkpoint's own (already imported) class wins
    cli = run("validate", *TINY, "--model=CLIModel", f"--ckpt_path={ckpt}", subclass_mode_model=True,
              save_config_callback=None)
    assert type(cli.model) is DeepCLIModel
    assert cli.model.depth == 3 and cli.model.hparams.hidden == 5
    assert torch.equal(cli.model.net[0].weight, trained.model.net[0].weight)


@pytest.mark.parametrize(("class_path", "message"), [
    ("tests.helpers.cli_models.CLIDataModule", "not a subclass of `tests.helpers.cli_models.CLIModel`"),
    ("tests.helpers.cli_models.NoSuchModel", "has no class `NoSuchModel`"),
    ("CLIModel", "not an import path"),
])
def test_ckpt_class_path_that_is_not_an_imported_model_subclass_is_refused(tmp_path, class_path, message):
    trained = run("fit", *TINY, save_config_callback=None)
    ckpt = tmp_path / "model.ckpt"
    trained.trainer.save_checkpoint(ckpt)
    _with_class_path(ckpt, class_path)
    with pytest.raises(MisconfigurationException, match=re.escape(message)) as exc:
        run("validate", *TINY, "--model=CLIModel", f"--ckpt_path={ckpt}", subclass_mode_model=True,
            save_config_callback=None)
    assert repr(class_path) in str(exc.value) and "adapt_checkpoint_hparams" in str(exc.value)


def test_ckpt_nested_class_path_of_a_module_not_imported_is_refused(tmp_path):
    trained = run("fit", *TINY, save_config_callback=None)
    ckpt = tmp_path / "model.ckpt"
    trained.trainer.save_checkpoint(ckpt)
    _with_class_path(ckpt, "tests.helpers.cli_models.CLIModel",
                     extra_layer={"class_path": "module_nobody_imported_yet.Layer", "init_args": {}})
    with pytest.raises(MisconfigurationException, match=r"hyper_parameters\['extra_layer'\]\['class_path'\]"
                       r".*module `module_nobody_imported_yet` is not imported"):
        run("validate", *TINY, "--model=CLIModel", f"--ckpt_path={ckpt}", subclass_mode_model=True,
            save_config_callback=None)
    assert "module_nobody_imported_yet" not in sys.modules


def test_adapt_checkpoint_hparams_can_drop_a_refused_class_path(tmp_path):
    trained = run("fit", *TINY, save_config_callback=None)
    ckpt = tmp_path / "model.ckpt"
    trained.trainer.save_checkpoint(ckpt)
    _with_class_path(ckpt, "module_nobody_imported_yet.Model")

    class DropClassPathCLI(LightningCLI):
        def adapt_checkpoint_hparams(self, subcommand, checkpoint_hparams):
            checkpoint_hparams.pop("_class_path")
            return checkpoint_hparams

    cli = run("validate", *TINY, "--model=CLIModel", f"--ckpt_path={ckpt}", subclass_mode_model=True,
              cli_class=DropClassPathCLI, save_config_callback=None)
    assert type(cli.model) is CLIModel


def test_args_together_with_command_line_arguments_warn(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["prog", "--model.hidden=4"])
    with pytest.warns(UserWarning, match="LightningCLI's args parameter is meant to run from Python"):
        LightningCLI(CLIModel, CLIDataModule, run=False, args=["--trainer.max_epochs=1"])


def test_a_trainer_class_without_callbacks_warns():
    from torchbolt import Trainer

    class NoCallbacksTrainer(Trainer):
        def __init__(self, max_epochs: int = 1) -> None:
            super().__init__(max_epochs=max_epochs, logger=False, enable_checkpointing=False)

    with pytest.warns(UserWarning, match="NoCallbacksTrainer` class does not expose the `callbacks` argument"):
        LightningCLI(CLIModel, CLIDataModule, trainer_class=NoCallbacksTrainer, run=False, args=[])
