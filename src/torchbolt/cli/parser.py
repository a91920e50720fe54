"""``LightningArgumentParser``: jsonargparse's parser, taught the Trainer, module, datamodule, callbacks,
optimizers and LR schedulers."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any, Union

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from torchbolt.callbacks.callback import Callback
from torchbolt.cli._jsonargparse import ArgumentParser, Namespace, class_from_function, require_jsonargparse
from torchbolt.core.datamodule import LightningDataModule
from torchbolt.core.module import LightningModule
from torchbolt.trainer.trainer import Trainer
from torchbolt.utilities.exceptions import MisconfigurationException


class ReduceLROnPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """PyTorch's ``ReduceLROnPlateau`` plus the ``monitor`` it reads, so a config file can name both.

    ``--lr_scheduler ReduceLROnPlateau --lr_scheduler.monitor val_loss`` selects this class.

    Args:
        optimizer: the optimizer whose learning rate is reduced.
        monitor: the logged metric to watch (e.g. ``"val_loss"``).
        args: the rest of ``torch.optim.lr_scheduler.ReduceLROnPlateau``'s arguments.
        kwargs: the rest of ``torch.optim.lr_scheduler.ReduceLROnPlateau``'s arguments.
    """

    def __init__(self, optimizer: Optimizer, monitor: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(optimizer, *args, **kwargs)
        self.monitor = monitor


# The CLI accepts this module's ReduceLROnPlateau (it carries the monitor), not PyTorch's own.
LRSchedulerTypeTuple = (LRScheduler, ReduceLROnPlateau)
LRSchedulerTypeUnion = Union[LRScheduler, ReduceLROnPlateau]
LRSchedulerType = Union[type[LRScheduler], type[ReduceLROnPlateau]]

# Aliases for type hints of CLI-configurable modules (``optimizer: OptimizerCallable = torch.optim.Adam``).
ArgsType = Union[list[str], dict[str, Any], Namespace, None]
OptimizerCallable = Callable[[Iterable], Optimizer]
LRSchedulerCallable = Callable[[Optimizer], Union[LRScheduler, ReduceLROnPlateau]]

_ClassOrTuple = Union[type, tuple[type, ...]]
_LIGHTNING_BASES = (Trainer, LightningModule, LightningDataModule, Callback)


class LightningArgumentParser(ArgumentParser):  # type: ignore[misc,valid-type]
    """A jsonargparse ``ArgumentParser`` with helpers to add torchbolt classes, optimizers and schedulers.

    Example::

        parser = LightningArgumentParser()
        parser.add_lightning_class_args(MyModel, "model")
        parser.add_optimizer_args(torch.optim.Adam)
        cfg = parser.parse_args(["--model.hidden", "64", "--optimizer.lr", "0.01"])

    Args:
        args: positional arguments of ``jsonargparse.ArgumentParser``.
        description: shown by ``--help``.
        env_prefix: prefix of environment variables (``PL_TRAINER__MAX_EPOCHS``), read when ``default_env``.
        default_env: also read settings from environment variables.
        kwargs: any other ``jsonargparse.ArgumentParser`` argument.

    Raises:
        ModuleNotFoundError: when ``jsonargparse`` is not installed (``pip install 'torchbolt[cli]'``).
    """

    def __init__(
        self,
        *args: Any,
        description: str = "torchbolt Trainer command line tool",
        env_prefix: str = "PL",
        default_env: bool = False,
        **kwargs: Any,
    ) -> None:
        require_jsonargparse("LightningArgumentParser")
        super().__init__(*args, description=description, env_prefix=env_prefix, default_env=default_env, **kwargs)
        self.callback_keys: list[str] = []
        # kept apart so that the CLI knows which optimizer/scheduler groups it may wire up automatically
        self._optimizers: dict[str, tuple[_ClassOrTuple, str]] = {}
        self._lr_schedulers: dict[str, tuple[_ClassOrTuple, str]] = {}

    def add_lightning_class_args(
        self,
        lightning_class: type | Callable[..., Any],
        nested_key: str,
        subclass_mode: bool = False,
        required: bool = True,
    ) -> list[str]:
        """Add the ``__init__`` arguments of a Trainer, LightningModule, LightningDataModule or Callback.

        Args:
            lightning_class: one of those classes (or a subclass), or a function returning an instance of one.
            nested_key: where its arguments live (``"model"`` gives ``--model.lr``).
            subclass_mode: accept any subclass, chosen with ``class_path``/``init_args`` (or ``--model=Name``).
            required: in subclass mode, whether a class must be given.

        Returns:
            The names of the arguments added.

        Raises:
            MisconfigurationException: when ``lightning_class`` is none of the above.
        """
        if callable(lightning_class) and not isinstance(lightning_class, type):
            lightning_class = class_from_function(lightning_class)
        if not (isinstance(lightning_class, type) and issubclass(lightning_class, _LIGHTNING_BASES)):
            raise MisconfigurationException(
                f"Cannot add arguments from {lightning_class!r}: pass a subclass of Trainer, LightningModule,"
                " LightningDataModule or Callback, or a function that returns an instance of one."
            )
        if issubclass(lightning_class, Callback):
            self.callback_keys.append(nested_key)
        if subclass_mode:
            return self.add_subclass_arguments(lightning_class, nested_key, fail_untyped=False, required=required)
        return self.add_class_arguments(
            lightning_class,
            nested_key,
            fail_untyped=False,
            instantiate=not issubclass(lightning_class, Trainer),  # the CLI builds the Trainer itself
            sub_configs=True,
        )

    def add_optimizer_args(
        self,
        optimizer_class: type[Optimizer] | tuple[type[Optimizer], ...] = (Optimizer,),
        nested_key: str = "optimizer",
        link_to: str = "AUTOMATIC",
    ) -> None:
        """Add an optimizer's arguments (all but ``params``) under ``nested_key``.

        Args:
            optimizer_class: an optimizer class (its arguments are added), or a tuple of base classes (any
                subclass can be chosen with ``--optimizer Adam``).
            nested_key: where its arguments live.
            link_to: ``"AUTOMATIC"`` (the CLI writes ``configure_optimizers``) or the dotted key of an
                ``__init__`` argument to pass it to (e.g. ``"model.optimizer_init"``).

        Raises:
            TypeError: when a class is not an ``Optimizer``.
        """
        classes = optimizer_class if isinstance(optimizer_class, tuple) else (optimizer_class,)
        if not all(isinstance(c, type) and issubclass(c, Optimizer) for c in classes):
            raise TypeError(f"`add_optimizer_args` expects Optimizer subclasses, got {optimizer_class!r}")
        kwargs: dict[str, Any] = {"instantiate": False, "fail_untyped": False, "skip": {"params"}}
        if isinstance(optimizer_class, tuple):
            self.add_subclass_arguments(optimizer_class, nested_key, **kwargs)
        else:
            self.add_class_arguments(optimizer_class, nested_key, sub_configs=True, **kwargs)
        self._optimizers[nested_key] = (optimizer_class, link_to)

    def add_lr_scheduler_args(
        self,
        lr_scheduler_class: LRSchedulerType | tuple[LRSchedulerType, ...] = LRSchedulerTypeTuple,
        nested_key: str = "lr_scheduler",
        link_to: str = "AUTOMATIC",
    ) -> None:
        """Add an LR scheduler's arguments (all but ``optimizer``) under ``nested_key``.

        Args:
            lr_scheduler_class: an ``LRScheduler`` (or this module's ``ReduceLROnPlateau``) class, or a tuple of
                base classes (any subclass can be chosen with ``--lr_scheduler StepLR``).
            nested_key: where its arguments live.
            link_to: ``"AUTOMATIC"`` or the dotted key of an ``__init__`` argument to pass it to.

        Raises:
            TypeError: when a class is not an LR scheduler.
        """
        classes = lr_scheduler_class if isinstance(lr_scheduler_class, tuple) else (lr_scheduler_class,)
        if not all(isinstance(c, type) and issubclass(c, LRSchedulerTypeTuple) for c in classes):
            raise TypeError(f"`add_lr_scheduler_args` expects LRScheduler subclasses, got {lr_scheduler_class!r}")
        kwargs: dict[str, Any] = {"instantiate": False, "fail_untyped": False, "skip": {"optimizer"}}
        if isinstance(lr_scheduler_class, tuple):
            self.add_subclass_arguments(lr_scheduler_class, nested_key, **kwargs)
        else:
            self.add_class_arguments(lr_scheduler_class, nested_key, sub_configs=True, **kwargs)
        self._lr_schedulers[nested_key] = (lr_scheduler_class, link_to)


def class_path_of(class_type: type) -> str:
    """The import path of ``class_type`` (``"torch.optim.adam.Adam"``)."""
    return f"{class_type.__module__}.{class_type.__name__}"


def with_class_path(class_type: type, init_args: Any = None) -> dict[str, Any]:
    """``{"class_path": ..., "init_args": ...}`` for a fixed class and its parsed arguments."""
    if init_args is not None and hasattr(init_args, "as_dict"):
        init_args = init_args.as_dict()
    return {"class_path": class_path_of(class_type), "init_args": dict(init_args or {})}


def instantiate_class(args: Any, init: dict[str, Any]) -> Any:
    """Build ``init["class_path"](*args, **init["init_args"])``.

    Example::

        optimizer = instantiate_class(model.parameters(), {"class_path": "torch.optim.SGD",
                                                           "init_args": {"lr": 0.1}})

    Args:
        args: the positional argument(s): one value, or a tuple of them.
        init: a dict with ``class_path`` and optionally ``init_args``.

    Returns:
        The new object.
    """
    kwargs = init.get("init_args", {}) or {}
    if not isinstance(args, tuple):
        args = (args,)
    module_name, class_name = init["class_path"].rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(*args, **kwargs)


def instantiate_module(class_type: type, config: dict[str, Any]) -> Any:
    """Build a ``class_type`` (a module, datamodule...) from ``config`` the way the CLI would.

    ``config`` holds the ``__init__`` arguments, type-checked and converted by jsonargparse (nested
    ``class_path``/``init_args`` dicts become objects). With a ``"_class_path"`` entry (what
    ``LightningCLI`` stores in ``hparams``), that subclass of ``class_type`` is built instead, from the
    remaining entries.

    Example::

        model = instantiate_module(LightningModule, {"_class_path": "my_pkg.MyModel", "hidden": 64})

    Raises:
        ModuleNotFoundError: without ``jsonargparse`` (``pip install 'torchbolt[cli]'``).
    """
    require_jsonargparse("instantiate_module")
    parser = ArgumentParser(exit_on_error=False)
    if "_class_path" in config:
        parser.add_subclass_arguments(class_type, "module", fail_untyped=False)
        config = {
            "class_path": config["_class_path"],
            "dict_kwargs": {k: v for k, v in config.items() if k != "_class_path"},
        }
    else:
        parser.add_class_arguments(class_type, "module", fail_untyped=False)
    parsed = parser.parse_object({"module": config})
    return parser.instantiate_classes(parsed).module
