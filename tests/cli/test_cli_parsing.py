"""LightningCLI parsing: flags, YAML files, subclass mode, optimizers, seeds, defaults and errors.

Every test builds the CLI in-process with ``args=`` and ``run=False`` (no training), so it checks what was
configured on the real model, datamodule and Trainer objects.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers.cli_models import (
    ClassesModel,
    CLIDataModule,
    CLIModel,
    DeepCLIModel,
    OtherCLIDataModule,
    StageRecorder,
)
from torchbolt import LightningModule, Trainer
from torchbolt.callbacks import ModelSummary, Timer
from torchbolt.cli import LightningArgumentParser, LightningCLI, ReduceLROnPlateau, instantiate_class
from torchbolt.utilities.exceptions import MisconfigurationException

QUIET = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def write_yaml(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def build(*args: str, **kwargs) -> LightningCLI:
    """A ``run=False`` CLI over CLIModel/CLIDataModule (unless overridden)."""
    kwargs.setdefault("model_class", CLIModel)
    kwargs.setdefault("datamodule_class", CLIDataModule)
    return LightningCLI(run=False, args=list(args), **kwargs)


# ---------------------------------------------------------------- optional dependency
def test_import_torchbolt_does_not_import_jsonargparse(subprocess_env):
    code = "import sys, torchbolt; import torchbolt.callbacks; print('jsonargparse' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_jsonargparse_raises_error_naming_the_extra(subprocess_env):
    code = (
        "import sys; sys.modules['jsonargparse'] = None\n"  # makes `import jsonargparse` fail, as if not installed
        "from torchbolt.cli import LightningCLI\n"
        "try:\n"
        "    LightningCLI(run=False, args=[])\n"
        "except ModuleNotFoundError as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True, check=True)
    assert "pip install 'torchbolt[cli]'" in out.stdout
    assert "LightningCLI requires `jsonargparse`" in out.stdout


# ---------------------------------------------------------------- run=False and flags
def test_run_false_builds_model_datamodule_and_trainer():
    cli = build(*QUIET)
    assert isinstance(cli.model, CLIModel)
    assert isinstance(cli.datamodule, CLIDataModule)
    assert isinstance(cli.trainer, Trainer)
    assert cli.subcommand is None
    assert cli.trainer.global_step == 0  # nothing ran


def test_model_flag_sets_init_argument():
    cli = build("--model.lr", "0.01", "--model.hidden", "5", *QUIET)
    assert cli.model.hparams.lr == 0.01
    assert cli.model.net[0].out_features == 5


def test_trainer_flag_sets_trainer_argument():
    cli = build("--trainer.max_epochs", "5", "--trainer.limit_train_batches", "3", *QUIET)
    assert cli.trainer.max_epochs == 5
    assert cli.trainer.limit_train_batches == 3


def test_data_flag_sets_datamodule_argument():
    cli = build("--data.batch_size", "64", *QUIET)
    assert cli.datamodule.batch_size == 64


def test_config_file_sets_values(tmp_path):
    cfg = write_yaml(tmp_path / "cfg.yaml", {"model": {"lr": 0.02}, "trainer": {"max_epochs": 7},
                                             "data": {"batch_size": 4}})
    cli = build("--config", cfg, *QUIET)
    assert (cli.model.hparams.lr, cli.trainer.max_epochs, cli.datamodule.batch_size) == (0.02, 7, 4)


def test_several_config_files_merge_in_order(tmp_path):
    first = write_yaml(tmp_path / "a.yaml", {"model": {"lr": 0.5, "hidden": 3}, "trainer": {"max_epochs": 2}})
    second = write_yaml(tmp_path / "b.yaml", {"model": {"lr": 0.25}})
    cli = build("--config", first, "--config", second, *QUIET)
    assert cli.model.hparams.lr == 0.25  # the later file wins
    assert cli.model.hparams.hidden == 3  # keys only the earlier file sets are kept
    assert cli.trainer.max_epochs == 2


def test_flags_after_a_config_file_override_it(tmp_path):
    cfg = write_yaml(tmp_path / "cfg.yaml", {"model": {"lr": 0.5}})
    assert build("--config", cfg, "--model.lr", "0.125", *QUIET).model.hparams.lr == 0.125
    assert build("--model.lr", "0.125", "--config", cfg, *QUIET).model.hparams.lr == 0.5


def test_callbacks_append_from_command_line():
    cli = build("--trainer.callbacks+=Timer", "--trainer.callbacks.duration=00:00:05:00",
                "--trainer.callbacks+=tests.helpers.cli_models.StageRecorder", "--trainer.callbacks.tag=second",
                *QUIET)
    timers = [cb for cb in cli.trainer.callbacks if isinstance(cb, Timer)]
    recorders = [cb for cb in cli.trainer.callbacks if isinstance(cb, StageRecorder)]
    assert len(timers) == 1 and timers[0]._duration == timedelta(minutes=5).total_seconds()
    assert [r.tag for r in recorders] == ["second"]


def test_callbacks_append_extends_those_of_a_config_file(tmp_path):
    cfg = write_yaml(tmp_path / "cfg.yaml", {"trainer": {"callbacks": [
        {"class_path": "tests.helpers.cli_models.StageRecorder", "init_args": {"tag": "from_file"}}]}})
    cli = build("--config", cfg, "--trainer.callbacks+=StageRecorder", "--trainer.callbacks.tag=appended", *QUIET)
    tags = [cb.tag for cb in cli.trainer.callbacks if isinstance(cb, StageRecorder)]
    assert tags == ["from_file", "appended"]


def test_callbacks_without_plus_replace_those_of_a_config_file(tmp_path):
    cfg = write_yaml(tmp_path / "cfg.yaml", {"trainer": {"callbacks": [
        {"class_path": "tests.helpers.cli_models.StageRecorder", "init_args": {"tag": "from_file"}}]}})
    cli = build("--config", cfg, "--trainer.callbacks=ModelSummary", *QUIET)
    assert not any(isinstance(cb, StageRecorder) for cb in cli.trainer.callbacks)
    assert any(isinstance(cb, ModelSummary) for cb in cli.trainer.callbacks)


# ---------------------------------------------------------------- subclass mode
def test_model_class_none_takes_class_path_and_init_args_from_config(tmp_path):
    cfg = write_yaml(tmp_path / "cfg.yaml", {"model": {
        "class_path": "tests.helpers.cli_models.DeepCLIModel", "init_args": {"depth": 5, "lr": 0.3}}})
    cli = build("--config", cfg, *QUIET, model_class=None)
    assert type(cli.model) is DeepCLIModel
    assert (cli.model.depth, cli.model.hparams.lr) == (5, 0.3)


def test_model_class_none_accepts_a_class_name_on_the_command_line():
    cli = build("--model=DeepCLIModel", "--model.depth=3", *QUIET, model_class=None)
    assert type(cli.model) is DeepCLIModel and cli.model.depth == 3


def test_subclass_mode_model_accepts_subclasses_of_the_given_class():
    cli = build("--model=DeepCLIModel", "--model.hidden=6", *QUIET, subclass_mode_model=True)
    assert type(cli.model) is DeepCLIModel and cli.model.hparams.hidden == 6


def test_subclass_mode_model_rejects_a_class_outside_the_hierarchy(capsys):
    with pytest.raises(SystemExit) as exc:
        build("--model=tests.helpers.cli_models.CLIDataModule", *QUIET, subclass_mode_model=True)
    assert exc.value.code == 2
    assert "model" in capsys.readouterr().err


def test_subclass_mode_data_takes_class_path():
    cli = build("--data=OtherCLIDataModule", "--data.noise=0.5", *QUIET, subclass_mode_data=True)
    assert type(cli.datamodule) is OtherCLIDataModule and cli.datamodule.noise == 0.5


def test_no_datamodule_class_means_no_datamodule_unless_given():
    assert build(*QUIET, datamodule_class=None).datamodule is None
    cli = build("--data=CLIDataModule", "--data.batch_size=3", *QUIET, datamodule_class=None)
    assert isinstance(cli.datamodule, CLIDataModule) and cli.datamodule.batch_size == 3


# ---------------------------------------------------------------- optimizers and schedulers
def test_optimizer_flag_replaces_configure_optimizers():
    with pytest.warns(UserWarning, match="configure_optimizers` will be overridden"):
        cli = build("--optimizer=Adam", "--optimizer.lr=0.01", *QUIET)
    optimizer = cli.model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == 0.01
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == {id(p) for p in cli.model.parameters()}


def test_lr_scheduler_flag_returns_optimizer_and_scheduler():
    cli = build("--optimizer=SGD", "--optimizer.lr=0.5", "--lr_scheduler=StepLR", "--lr_scheduler.step_size=3", *QUIET)
    optimizers, schedulers = cli.model.configure_optimizers()
    assert isinstance(optimizers[0], torch.optim.SGD)
    assert isinstance(schedulers[0], torch.optim.lr_scheduler.StepLR)
    assert schedulers[0].step_size == 3 and schedulers[0].optimizer is optimizers[0]


def test_reduce_lr_on_plateau_carries_its_monitor(tmp_path):
    cfg = write_yaml(tmp_path / "cfg.yaml", {
        "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}},
        "lr_scheduler": {"class_path": "ReduceLROnPlateau", "init_args": {"monitor": "val_loss", "patience": 2}},
    })
    config = build("--config", cfg, *QUIET).model.configure_optimizers()
    scheduler = config["lr_scheduler"]["scheduler"]
    assert isinstance(scheduler, ReduceLROnPlateau)
    assert config["lr_scheduler"]["monitor"] == "val_loss" and scheduler.patience == 2


def test_model_configure_optimizers_kept_without_optimizer_flag():
    cli = build(*QUIET)
    assert "configure_optimizers" not in vars(cli.model)
    assert isinstance(cli.model.configure_optimizers(), torch.optim.SGD)


def test_auto_configure_optimizers_false_adds_no_optimizer_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        build("--optimizer=Adam", *QUIET, auto_configure_optimizers=False)
    assert exc.value.code == 2
    assert "optimizer" in capsys.readouterr().err


def test_custom_configure_optimizers_staticmethod_is_used():
    class MyCLI(LightningCLI):
        @staticmethod
        def configure_optimizers(lightning_module, optimizer, lr_scheduler=None):
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": lr_scheduler, "interval": "step"}}

    cli = MyCLI(CLIModel, CLIDataModule, run=False,
                args=["--optimizer=SGD", "--optimizer.lr=0.1", "--lr_scheduler=ExponentialLR",
                      "--lr_scheduler.gamma=0.5", *QUIET])
    config = cli.model.configure_optimizers()
    assert config["lr_scheduler"]["interval"] == "step"
    assert isinstance(config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.ExponentialLR)


def test_optimizer_linked_to_model_argument_is_not_automatic():
    class LinkedCLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            parser.add_optimizer_args(torch.optim.Adam, link_to="model.optimizer_init")

    cli = LinkedCLI(OptimizerInitModel, CLIDataModule, run=False, args=["--optimizer.lr=0.003", *QUIET])
    optimizer = instantiate_class(cli.model.parameters(), cli.model.optimizer_init)
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 0.003
    assert "configure_optimizers" not in vars(cli.model)


class OptimizerInitModel(CLIModel):
    def __init__(self, optimizer_init: dict | None = None, hidden: int = 8) -> None:
        super().__init__(hidden=hidden)
        self.optimizer_init = optimizer_init


# ---------------------------------------------------------------- seeds
def test_seed_everything_int_seeds_before_the_model_is_built():
    weights = [build("--seed_everything=7", *QUIET).model.net[0].weight.detach().clone() for _ in range(2)]
    torch.manual_seed(7)
    expected = CLIModel().net[0].weight
    assert torch.equal(weights[0], weights[1]) and torch.equal(weights[0], expected)
    assert os.environ["PL_GLOBAL_SEED"] == "7"


def test_seed_everything_true_picks_a_seed_and_records_it():
    cli = build(*QUIET)  # True is the default
    seed = cli.config["seed_everything"]
    assert isinstance(seed, int) and not isinstance(seed, bool)
    assert os.environ["PL_GLOBAL_SEED"] == str(seed)
    torch.manual_seed(seed)
    assert torch.equal(cli.model.net[0].weight, CLIModel().net[0].weight)


def test_seed_everything_true_is_random_across_fresh_processes(subprocess_env):
    code = (
        "import sys; sys.argv = ['main.py']\n"
        "from torchbolt.cli import LightningCLI\n"
        "from torchbolt.demos.boring_classes import BoringModel\n"
        "cli = LightningCLI(BoringModel, run=False, args=['--trainer.logger=false'])\n"
        "print('SEED', cli.config['seed_everything'])\n"
    )
    env = {k: v for k, v in subprocess_env.items() if k != "PL_GLOBAL_SEED"}
    seeds = set()
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        seeds.add(next(line for line in out.stdout.splitlines() if line.startswith("SEED")))
    assert len(seeds) == 2  # two independent 32-bit draws: equal with probability 2**-32


def test_seed_everything_true_reuses_pl_global_seed(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "1234")  # set by a launcher for the processes it starts
    assert build(*QUIET).config["seed_everything"] == 1234


def test_seed_everything_false_does_not_seed():
    cli = build("--seed_everything=false", *QUIET)
    assert cli.config["seed_everything"] is False
    assert "PL_GLOBAL_SEED" not in os.environ


def test_seed_everything_default_argument():
    assert build(*QUIET, seed_everything_default=99).config["seed_everything"] == 99


# ---------------------------------------------------------------- args, defaults, parser kwargs
def test_args_as_dict():
    cli = LightningCLI(CLIModel, CLIDataModule, run=False, args={
        "model": {"lr": 0.04}, "trainer": {"max_epochs": 3, "logger": False}, "data": {"batch_size": 2}})
    assert (cli.model.hparams.lr, cli.trainer.max_epochs, cli.datamodule.batch_size) == (0.04, 3, 2)


def test_args_as_dict_with_subcommand(tmp_path):
    cli = LightningCLI(CLIModel, CLIDataModule, args={
        "validate": {"trainer": {"logger": False, "enable_progress_bar": False, "limit_val_batches": 1}}})
    assert cli.subcommand == "validate"
    assert cli.trainer.state.finished


def test_args_and_command_line_arguments_together_warn(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["main.py", "fit"])
    with pytest.warns(UserWarning, match="only `args` is parsed"):
        build(*QUIET)


def test_trainer_defaults_change_defaults_and_always_add_their_callbacks():
    recorder = StageRecorder(tag="always")
    cli = build("--trainer.logger=false", trainer_defaults={
        "max_epochs": 4, "enable_progress_bar": False, "callbacks": [recorder]})
    assert cli.trainer.max_epochs == 4
    assert recorder in cli.trainer.callbacks
    assert cli.config["trainer"]["max_epochs"] == 4


def test_trainer_defaults_are_overridden_by_flags():
    cli = build("--trainer.max_epochs=9", *QUIET, trainer_defaults={"max_epochs": 4})
    assert cli.trainer.max_epochs == 9


def test_parser_kwargs_default_config_files(tmp_path):
    defaults = write_yaml(tmp_path / "defaults.yaml", {"model": {"lr": 0.07}})
    cli = build(*QUIET, parser_kwargs={"default_config_files": [defaults]})
    assert cli.model.hparams.lr == 0.07


def test_parser_kwargs_per_subcommand(tmp_path):
    defaults = write_yaml(tmp_path / "validate.yaml", {"trainer": {"limit_val_batches": 1}, "model": {"hidden": 3}})
    cli = LightningCLI(CLIModel, CLIDataModule, args=["validate", *QUIET],
                       parser_kwargs={"validate": {"default_config_files": [defaults]}})
    assert cli.model.hparams.hidden == 3 and cli.trainer.limit_val_batches == 1


def test_parser_kwargs_default_env_reads_environment(monkeypatch):
    monkeypatch.setenv("PL_TRAINER__MAX_EPOCHS", "6")
    monkeypatch.setenv("PL_MODEL__LR", "0.6")
    cli = build(*QUIET, parser_kwargs={"default_env": True})
    assert cli.trainer.max_epochs == 6 and cli.model.hparams.lr == 0.6


# ---------------------------------------------------------------- errors
def test_unknown_flag_exits_with_code_2_naming_it(capsys):
    with pytest.raises(SystemExit) as exc:
        build("--model.not_an_argument=1", *QUIET)
    assert exc.value.code == 2
    assert "not_an_argument" in capsys.readouterr().err


def test_unknown_key_in_config_file_exits_with_code_2_naming_it(tmp_path, capsys):
    cfg = write_yaml(tmp_path / "cfg.yaml", {"trainer": {"max_epochz": 3}})
    with pytest.raises(SystemExit) as exc:
        build("--config", cfg, *QUIET)
    assert exc.value.code == 2
    assert "max_epochz" in capsys.readouterr().err


def test_bad_type_exits_with_code_2_naming_the_key(capsys):
    with pytest.raises(SystemExit) as exc:
        build("--trainer.max_epochs=three", *QUIET)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "trainer.max_epochs" in err and "three" in err


def test_bad_type_in_config_file_exits_with_code_2(tmp_path, capsys):
    cfg = write_yaml(tmp_path / "cfg.yaml", {"model": {"hidden": "wide"}})
    with pytest.raises(SystemExit) as exc:
        build("--config", cfg, *QUIET)
    assert exc.value.code == 2
    assert "model.hidden" in capsys.readouterr().err


def test_missing_config_file_exits_with_code_2(capsys):
    with pytest.raises(SystemExit) as exc:
        build("--config", "does_not_exist.yaml", *QUIET)
    assert exc.value.code == 2
    assert "does_not_exist.yaml" in capsys.readouterr().err


def test_missing_subcommand_exits_with_code_2(capsys):
    with pytest.raises(SystemExit) as exc:
        LightningCLI(CLIModel, CLIDataModule, args=[])
    assert exc.value.code == 2
    assert "fit" in capsys.readouterr().err


def test_help_exits_with_code_0_and_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        LightningCLI(CLIModel, CLIDataModule, args=["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("fit", "validate", "test", "predict"))


# ---------------------------------------------------------------- parser extension points
def test_link_arguments_on_parse():
    class LinkedCLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            parser.link_arguments("data.features", "model.features")

    cli = LinkedCLI(CLIModel, CLIDataModule, run=False, args=["--data.features=6", *QUIET])
    assert cli.model.net[0].in_features == 6 and cli.datamodule.features == 6


def test_link_arguments_on_instantiate():
    class LinkedCLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")

    cli = LinkedCLI(ClassesModel, CLIDataModule, run=False, args=QUIET)
    assert cli.model.num_classes == cli.datamodule.num_classes == 2


def test_add_arguments_to_parser_custom_argument():
    class ExtraCLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            parser.add_argument("--notes", type=str, default="none")

    cli = ExtraCLI(CLIModel, CLIDataModule, run=False, args=["--notes=hello", *QUIET])
    assert cli.config["notes"] == "hello"


def test_lightning_class_callback_group_is_added_to_the_trainer():
    class CallbackCLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            parser.add_lightning_class_args(StageRecorder, "recorder")

    cli = CallbackCLI(CLIModel, CLIDataModule, run=False, args=["--recorder.tag=grouped", *QUIET])
    recorders = [cb for cb in cli.trainer.callbacks if isinstance(cb, StageRecorder)]
    assert [r.tag for r in recorders] == ["grouped"]


def test_add_lightning_class_args_rejects_other_classes():
    parser = LightningArgumentParser()
    with pytest.raises(MisconfigurationException, match="Cannot add arguments from"):
        parser.add_lightning_class_args(torch.nn.Linear, "linear")


def test_add_lightning_class_args_accepts_a_function_returning_a_module():
    def make_model(hidden: int = 3) -> CLIModel:
        return CLIModel(hidden=hidden)

    cli = LightningCLI(make_model, CLIDataModule, run=False, args=["--model.hidden=7", *QUIET])
    assert isinstance(cli.model, CLIModel) and cli.model.hparams.hidden == 7


def test_instantiation_hooks_run_in_order():
    calls: list[str] = []

    class HookCLI(LightningCLI):
        def before_instantiate_classes(self):
            calls.append(f"before:{hasattr(self, 'model')}")

        def after_instantiate_classes(self):
            calls.append(f"after:{isinstance(self.model, LightningModule)}")

    HookCLI(CLIModel, CLIDataModule, run=False, args=QUIET)
    assert calls == ["before:False", "after:True"]


def test_trainer_class_argument_accepts_a_subclass():
    class MyTrainer(Trainer):
        pass

    cli = build(*QUIET, trainer_class=MyTrainer)
    assert type(cli.trainer) is MyTrainer

