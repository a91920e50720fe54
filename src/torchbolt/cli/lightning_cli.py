"""``LightningCLI``: ``python main.py fit|validate|test|predict`` with every setting from flags or YAML files."""

from __future__ import annotations

import os
import random
import sys
from functools import partial, update_wrapper
from pathlib import Path
from types import MethodType
from typing import Any, Union

from torch.optim import Optimizer

from torchbolt.callbacks.callback import Callback
from torchbolt.cli._checkpoint_classes import check_checkpoint_hparams
from torchbolt.cli._jsonargparse import (
    ActionConfigFile,
    Namespace,
    class_from_function,
    instantiate,
    require_jsonargparse,
)
from torchbolt.cli.parser import (
    ArgsType,
    LightningArgumentParser,
    LRSchedulerTypeTuple,
    LRSchedulerTypeUnion,
    ReduceLROnPlateau,
    instantiate_class,
    with_class_path,
)
from torchbolt.cli.save_config import SaveConfigCallback
from torchbolt.core.datamodule import LightningDataModule
from torchbolt.core.module import LightningModule
from torchbolt.trainer.trainer import Trainer
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.parsing import is_overridden
from torchbolt.utilities.rank_zero import rank_zero_warn
from torchbolt.utilities.seed import _MAX_SEED, _MIN_SEED, seed_everything

_Register = dict[str, tuple[Union[type, tuple[type, ...]], str]]


class LightningCLI:
    """A command line tool that builds the model, datamodule and Trainer from flags and YAML files, then runs.

    Example (``main.py``)::

        from torchbolt.cli import LightningCLI

        def cli_main():
            LightningCLI(MyModel, MyDataModule)

        if __name__ == "__main__":
            cli_main()

    then ``python main.py fit --config config.yaml --model.lr 0.01 --trainer.max_epochs 5``,
    ``python main.py fit --print_config > config.yaml``, ``python main.py test --ckpt_path best.ckpt``.
    ``--help`` on the tool or on a subcommand lists every setting.

    Args:
        model_class: the LightningModule class (or a function returning one). ``None``: any subclass,
            chosen with ``--model=ClassName`` / ``class_path``.
        datamodule_class: the LightningDataModule class (or a function returning one). ``None``: any
            subclass via ``--data=ClassName``, or none (the module's own ``*_dataloader`` methods).
        save_config_callback: the callback class that writes ``config.yaml`` to the log dir (``None``: none).
        save_config_kwargs: its keyword arguments, e.g. ``{"overwrite": True}``.
        trainer_class: the Trainer class, or a function returning a Trainer.
        trainer_defaults: new defaults of Trainer arguments; its ``callbacks`` are always added and cannot be
            configured away.
        seed_everything_default: the default of ``--seed_everything``: an int seed, ``True`` (use
            ``PL_GLOBAL_SEED`` if set, else pick a random seed; either way it is recorded in the config) or
            ``False`` (do not seed).
        parser_kwargs: keyword arguments of the parser; a dict keyed by subcommand gives per-subcommand ones,
            e.g. ``{"fit": {"default_config_files": ["fit.yaml"]}}``.
        parser_class: the parser class (a ``LightningArgumentParser`` subclass).
        subclass_mode_model: accept any subclass of ``model_class`` (``class_path``/``init_args``).
        subclass_mode_data: accept any subclass of ``datamodule_class``.
        args: what to parse instead of ``sys.argv[1:]``: a list of command-line strings, or a dict/Namespace
            config (``{"fit": {"trainer": {"max_epochs": 1}}}``).
        run: run the subcommand. ``False``: no subcommands; only build ``cli.model``, ``cli.datamodule``,
            ``cli.trainer``.
        auto_configure_optimizers: add ``--optimizer``/``--lr_scheduler`` and, when one is given, replace the
            model's ``configure_optimizers``.
        load_from_checkpoint_support: accepted for compatibility; see ``docs/cli.md``.

    Raises:
        ModuleNotFoundError: when ``jsonargparse`` is not installed (``pip install 'torchbolt[cli]'``).
        SystemExit: with code 2 for an unknown key or a bad value (the message names it), with code 0 after
            ``--help`` or ``--print_config``.
    """

    def __init__(
        self,
        model_class: type[LightningModule] | Any = None,
        datamodule_class: type[LightningDataModule] | Any = None,
        save_config_callback: type[SaveConfigCallback] | None = SaveConfigCallback,
        save_config_kwargs: dict[str, Any] | None = None,
        trainer_class: type[Trainer] | Any = Trainer,
        trainer_defaults: dict[str, Any] | None = None,
        seed_everything_default: bool | int = True,
        parser_kwargs: dict[str, Any] | None = None,
        parser_class: type[LightningArgumentParser] = LightningArgumentParser,
        subclass_mode_model: bool = False,
        subclass_mode_data: bool = False,
        args: ArgsType = None,
        run: bool = True,
        auto_configure_optimizers: bool = True,
        load_from_checkpoint_support: bool = True,
    ) -> None:
        require_jsonargparse("LightningCLI")
        self.save_config_callback = save_config_callback
        self.save_config_kwargs = save_config_kwargs or {}
        self.trainer_class = trainer_class
        self.trainer_defaults = trainer_defaults or {}
        self.seed_everything_default = seed_everything_default
        self.parser_kwargs = parser_kwargs or {}
        self.parser_class = parser_class
        self.auto_configure_optimizers = auto_configure_optimizers
        self.load_from_checkpoint_support = load_from_checkpoint_support

        self.model_class = model_class
        self._model_class = model_class or LightningModule
        self.subclass_mode_model = model_class is None or subclass_mode_model
        self.datamodule_class = datamodule_class
        self._datamodule_class = datamodule_class or LightningDataModule
        self.subclass_mode_data = datamodule_class is None or subclass_mode_data

        self.model: LightningModule
        self.datamodule: LightningDataModule | None = None
        self.trainer: Trainer

        main_kwargs, subparser_kwargs = self._setup_parser_kwargs(self.parser_kwargs)
        self.setup_parser(run, main_kwargs, subparser_kwargs)
        self.parse_arguments(self.parser, args)
        self._parse_ckpt_path()
        self.subcommand: str | None = self.config["subcommand"] if run else None
        self._set_seed()

        self.before_instantiate_classes()
        self.instantiate_classes()
        self.after_instantiate_classes()
        if self.subcommand is not None:
            self._run_subcommand(self.subcommand)

    # ------------------------------------------------------------------ parser construction
    def _setup_parser_kwargs(self, parser_kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        names = self.subcommands().keys()
        main_kwargs = {k: v for k, v in parser_kwargs.items() if k not in names}
        subparser_kwargs = {k: v for k, v in parser_kwargs.items() if k in names}
        return main_kwargs, subparser_kwargs

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """Create a parser with ``-c/--config`` (override to change the parser or add global options)."""
        import torchbolt

        kwargs.setdefault("dump_header", [f"torchbolt=={torchbolt.__version__}"])
        parser = self.parser_class(**kwargs)
        parser.add_argument(
            "-c", "--config", action=ActionConfigFile,
            help="Path to a configuration file in YAML or JSON; repeat to merge several, later ones winning.",
        )
        return parser

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict[str, Any], subparser_kwargs: dict[str, Any]) -> None:
        """Create ``self.parser``, with one sub-parser per subcommand when ``add_subcommands``."""
        self.parser = self.init_parser(**main_kwargs)
        if add_subcommands:
            self._subcommand_method_arguments: dict[str, list[str]] = {}
            self._add_subcommands(self.parser, **subparser_kwargs)
        else:
            self._add_arguments(self.parser)

    def add_default_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add ``--seed_everything``."""
        parser.add_argument(
            "--seed_everything",
            type=Union[bool, int],
            default=self.seed_everything_default,
            help="An int seeds every random generator with it before the classes are built; True picks a seed"
            " (PL_GLOBAL_SEED if set, else a random one) and records it in the config; False does not seed.",
        )

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add the ``trainer``, ``model`` and ``data`` argument groups."""
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        defaults = {f"trainer.{k}": v for k, v in self.trainer_defaults.items() if k != "callbacks"}
        parser.set_defaults(defaults)
        parser.add_lightning_class_args(self._model_class, "model", subclass_mode=self.subclass_mode_model)
        # without a datamodule class the module's own *_dataloader methods may provide the data
        parser.add_lightning_class_args(
            self._datamodule_class, "data", subclass_mode=self.subclass_mode_data,
            required=self.datamodule_class is not None,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Override to add arguments or links, e.g. ``parser.link_arguments("data.num_classes", "model.num_classes")``.

        Args:
            parser: the parser of the running subcommand (called once per subcommand parser).
        """

    def _add_arguments(self, parser: LightningArgumentParser) -> None:
        self.add_default_arguments_to_parser(parser)
        self.add_core_arguments_to_parser(parser)
        self.add_arguments_to_parser(parser)
        if self.auto_configure_optimizers:
            if not parser._optimizers:  # the user may have added their own in add_arguments_to_parser
                parser.add_optimizer_args((Optimizer,))
            if not parser._lr_schedulers:
                parser.add_lr_scheduler_args(LRSchedulerTypeTuple)
        self.link_optimizers_and_lr_schedulers(parser)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """The subcommands, each with the Trainer-method arguments the CLI fills itself (not configurable)."""
        return {
            "fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
            "validate": {"model", "dataloaders", "datamodule"},
            "test": {"model", "dataloaders", "datamodule"},
            "predict": {"model", "dataloaders", "datamodule"},
        }

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        self._subcommand_parsers: dict[str, LightningArgumentParser] = {}
        subcommands = parser.add_subcommands()
        trainer_class = (
            self.trainer_class if isinstance(self.trainer_class, type) else class_from_function(self.trainer_class)
        )
        for name in self.subcommands():
            description = _short_description(getattr(trainer_class, name))
            sub_kwargs = dict(kwargs.get(name, {}))
            sub_kwargs.setdefault("description", description)
            subparser = self._prepare_subcommand_parser(trainer_class, name, **sub_kwargs)
            self._subcommand_parsers[name] = subparser
            subcommands.add_subcommand(name, subparser, help=description)

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = self.init_parser(**kwargs)
        self._add_arguments(parser)
        skip: set[str | int] = set(self.subcommands()[subcommand])
        # e.g. --ckpt_path for every subcommand, --verbose for validate/test
        self._subcommand_method_arguments[subcommand] = parser.add_method_arguments(klass, subcommand, skip=skip)
        return parser

    @staticmethod
    def link_optimizers_and_lr_schedulers(parser: LightningArgumentParser) -> None:
        """Link every optimizer/scheduler group added with a ``link_to`` target to that target."""
        for key, (class_type, link_to) in {**parser._optimizers, **parser._lr_schedulers}.items():
            if link_to == "AUTOMATIC":
                continue
            if isinstance(class_type, tuple):
                parser.link_arguments(key, link_to)
            else:
                parser.link_arguments(key, link_to, compute_fn=partial(with_class_path, class_type))

    # ------------------------------------------------------------------ parsing
    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse ``args`` (default ``sys.argv[1:]``) into ``self.config``; exits with code 2 on a bad input."""
        if args is not None and len(sys.argv) > 1:
            rank_zero_warn(
                "LightningCLI's args parameter is meant to run from Python as if from the command line; both"
                f" `args` and command-line arguments were given (sys.argv[1:]={sys.argv[1:]}, args={args}):"
                " only `args` is parsed."
            )
        if isinstance(args, (dict, Namespace)):
            self.config = parser.parse_object(args)
        else:
            self.config = parser.parse_args(args)

    def adapt_checkpoint_hparams(self, subcommand: str, checkpoint_hparams: dict[str, Any]) -> dict[str, Any]:
        """Override to change the hyperparameters read from ``--ckpt_path`` before they configure the model.

        Args:
            subcommand: the subcommand being run.
            checkpoint_hparams: the checkpoint's ``hyper_parameters``.

        Returns:
            The hyperparameters to apply (an empty dict applies none).
        """
        return checkpoint_hparams

    def _parse_ckpt_path(self) -> None:
        """With ``--ckpt_path``, configure the model with the checkpoint's saved hyperparameters.

        Raises:
            MisconfigurationException: when the hyperparameters name a class (``_class_path``, or a nested
                ``class_path``) whose module the program has not imported, or a ``_class_path`` that is not a
                subclass of the CLI's model class. Nothing named by the checkpoint is ever imported.
        """
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return  # "best"/"last" and remote paths are resolved by the Trainer
        from torchbolt.utilities.cloud_io import _load

        checkpoint = _load(ckpt_path, map_location="cpu")  # weights-only: loading executes no code
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        hparams = self.adapt_checkpoint_hparams(subcommand, hparams) if hparams else hparams
        if not hparams:
            return
        # the parser imports the modules of the class paths it is given: only already-imported classes pass
        base = self._model_class if isinstance(self._model_class, type) else LightningModule
        check_checkpoint_hparams(hparams, base, str(ckpt_path))
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        try:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        except SystemExit:
            sys.stderr.write(f"The hyperparameters saved in {ckpt_path} do not fit the model's arguments.\n")
            raise

    def _set_seed(self) -> None:
        seed = self._get(self.config, "seed_everything")
        if seed is False:
            return
        if seed is True:
            seed = _pick_seed()
        seed = seed_everything(seed, workers=True)
        # the chosen seed goes into the saved config.yaml so the run can be repeated exactly
        target = self.config[self.subcommand] if self.subcommand else self.config
        target["seed_everything"] = seed

    # ------------------------------------------------------------------ instantiation
    def before_instantiate_classes(self) -> None:
        """Override to run code after parsing, before the classes are built (``self.config`` is ready)."""

    def instantiate_classes(self) -> None:
        """Build ``self.model``, ``self.datamodule`` and ``self.trainer`` from ``self.config``."""
        self.config_init = instantiate(self.parser, self.config)
        self.datamodule = self._get(self.config_init, "data")
        self.model = self._get(self.config_init, "model")
        self._add_configure_optimizers_method_to_model(self.subcommand)
        self.trainer = self.instantiate_trainer()

    def after_instantiate_classes(self) -> None:
        """Override to run code after the classes are built, before the subcommand runs."""

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Build the Trainer from its config group plus ``kwargs``, adding the CLI's callbacks.

        Args:
            kwargs: Trainer arguments that override the configured ones.
        """
        extra_callbacks = [self._get(self.config_init, key) for key in self._parser(self.subcommand).callback_keys]
        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        return self._instantiate_trainer(trainer_config, extra_callbacks)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        if "callbacks" not in config:
            rank_zero_warn(
                f"The `{getattr(self.trainer_class, '__qualname__', self.trainer_class)}` class does not expose the"
                " `callbacks` argument, so the CLI's callbacks (and the config-saving callback) are not added."
            )
            return self.trainer_class(**config)
        value = config["callbacks"]
        config["callbacks"] = [] if value is None else list(value) if isinstance(value, list) else [value]
        config["callbacks"].extend(callbacks)
        if "callbacks" in self.trainer_defaults:
            default = self.trainer_defaults["callbacks"]
            config["callbacks"] += default if isinstance(default, list) else [default]
        if self.save_config_callback is not None and not config.get("fast_dev_run", False):
            config["callbacks"].append(
                self.save_config_callback(
                    self._parser(self.subcommand),
                    self.config.get(str(self.subcommand), self.config),
                    **self.save_config_kwargs,
                )
            )
        return self.trainer_class(**config)

    def _parser(self, subcommand: str | None) -> LightningArgumentParser:
        return self.parser if subcommand is None else self._subcommand_parsers[subcommand]

    def _get(self, config: Any, key: str, default: Any = None) -> Any:
        """``config[key]``, looked up inside the subcommand's group when there is one."""
        return config.get(str(self.subcommand), config).get(key, default)

    # ------------------------------------------------------------------ optimizers
    @staticmethod
    def configure_optimizers(
        lightning_module: LightningModule, optimizer: Optimizer, lr_scheduler: LRSchedulerTypeUnion | None = None
    ) -> Any:
        """What the model's ``configure_optimizers`` returns when ``--optimizer`` is given (override to change).

        Args:
            lightning_module: the model.
            optimizer: the optimizer built from ``--optimizer``.
            lr_scheduler: the scheduler built from ``--lr_scheduler``, if any.
        """
        if lr_scheduler is None:
            return optimizer
        if isinstance(lr_scheduler, ReduceLROnPlateau):
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": lr_scheduler, "monitor": lr_scheduler.monitor}}
        return [optimizer], [lr_scheduler]

    def _add_configure_optimizers_method_to_model(self, subcommand: str | None) -> None:
        """Replace the model's ``configure_optimizers`` when one automatic optimizer group was configured."""
        if not self.auto_configure_optimizers:
            return
        parser = self._parser(subcommand)
        optimizers = _automatic_keys(Optimizer, parser._optimizers)
        lr_schedulers = _automatic_keys(LRSchedulerTypeTuple, parser._lr_schedulers)
        if not optimizers:
            return
        if len(optimizers) > 1 or len(lr_schedulers) > 1:
            raise MisconfigurationException(
                f"`{type(self).__name__}` can build `configure_optimizers` for at most one optimizer and one"
                f" lr_scheduler group left 'AUTOMATIC', found {optimizers + lr_schedulers}. Link the groups to your"
                " model with `link_to=...` and implement `configure_optimizers` yourself."
            )
        optimizer_init = self._init_spec(optimizers[0], parser._optimizers)
        if not optimizer_init:
            return  # the groups exist but nothing was configured: keep the model's own method
        lr_scheduler_init = self._init_spec(lr_schedulers[0], parser._lr_schedulers) if lr_schedulers else None
        if is_overridden("configure_optimizers", self.model, LightningModule):
            rank_zero_warn(
                f"`{type(self.model).__name__}.configure_optimizers` will be overridden by"
                f" `{type(self).__name__}.configure_optimizers` (an optimizer was given on the command line/config)."
            )
        optimizer = instantiate_class(self.model.parameters(), optimizer_init)
        lr_scheduler = instantiate_class(optimizer, lr_scheduler_init) if lr_scheduler_init else None
        fn = partial(self.configure_optimizers, optimizer=optimizer, lr_scheduler=lr_scheduler)
        update_wrapper(fn, self.configure_optimizers)
        self.model.configure_optimizers = MethodType(fn, self.model)  # type: ignore[method-assign]

    def _init_spec(self, key: str, register: _Register) -> dict[str, Any] | None:
        class_type = register[key][0]
        init = self._get(self.config_init, key)
        if not isinstance(class_type, tuple):
            return with_class_path(class_type, init)
        if init is not None and hasattr(init, "as_dict"):
            init = init.as_dict()
        return init or None

    # ------------------------------------------------------------------ running
    def _run_subcommand(self, subcommand: str) -> None:
        before = getattr(self, f"before_{subcommand}", None)
        if callable(before):
            before()
        fn = getattr(self, subcommand, getattr(self.trainer, subcommand))
        fn(**self._prepare_subcommand_kwargs(subcommand))
        after = getattr(self, f"after_{subcommand}", None)
        if callable(after):
            after()

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        allowed = self._subcommand_method_arguments[subcommand]
        kwargs = {k: v for k, v in self.config_init[subcommand].items() if k in allowed}
        kwargs["model"] = self.model
        if self.datamodule is not None:
            kwargs["datamodule"] = self.datamodule
        return kwargs


def _pick_seed() -> int:
    """``PL_GLOBAL_SEED`` when set (processes started by a launcher agree), else a fresh random seed."""
    env_seed = os.environ.get("PL_GLOBAL_SEED")
    if env_seed is not None:
        try:
            return int(env_seed)
        except ValueError:
            pass
    return random.SystemRandom().randint(_MIN_SEED, _MAX_SEED)


def _automatic_keys(class_type: type | tuple[type, ...], register: _Register) -> list[str]:
    keys = []
    for key, (base, link_to) in register.items():
        bases = base if isinstance(base, tuple) else (base,)
        if link_to == "AUTOMATIC" and any(issubclass(b, class_type) for b in bases):
            keys.append(key)
    return keys


def _short_description(component: object) -> str | None:
    doc = getattr(component, "__doc__", None)
    if not doc:
        return None
    lines = [line.strip() for line in doc.strip().splitlines()]
    return lines[0] if lines else None
