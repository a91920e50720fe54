"""Vet the classes a checkpoint names before ``LightningCLI`` hands its hyperparameters to the parser.

A checkpoint's ``hyper_parameters`` may carry ``_class_path`` (the class the CLI built, as Lightning's CLI
records it) and, inside nested values, ``{"class_path": ...}`` entries. jsonargparse resolves such paths by
importing their module, and importing a module runs its code: a checkpoint from an untrusted source could
name a module file lying next to the script. So every class a checkpoint names must already be imported by
the running program; nothing here imports anything.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from torchbolt.utilities.exceptions import MisconfigurationException

_DROP_HINT = (
    "or override `LightningCLI.adapt_checkpoint_hparams` to drop that entry (the class chosen with --model or"
    " the config is then used)."
)


def imported_class(class_path: str) -> type | None:
    """The class ``module.Name`` when ``module`` is already in ``sys.modules``; ``None`` otherwise.

    Never imports: the module is looked up in ``sys.modules`` and the name in the module's namespace (not with
    ``getattr``, which would run a module-level ``__getattr__`` that may import lazily). Nested classes
    (``module.Outer.Inner``) are not resolved: jsonargparse would try ``module.Outer`` as a module first.
    """
    module_name, _, name = class_path.rpartition(".")
    module = sys.modules.get(module_name) if module_name else None
    if module is None:
        return None
    obj = vars(module).get(name)
    return obj if isinstance(obj, type) else None


def check_checkpoint_class_path(class_path: Any, base: type, where: str, ckpt_path: str) -> type:
    """Return the class ``class_path`` names, if it is already imported and a subclass of ``base``.

    Args:
        class_path: the value read from the checkpoint.
        base: the class the CLI accepts at that place (the CLI's model class for ``_class_path``).
        where: where the value sits in the checkpoint, for the message (``"hyper_parameters['_class_path']"``).
        ckpt_path: the checkpoint file, for the message.

    Raises:
        MisconfigurationException: naming the class path and the fix, when it is not a dotted string, its
            module is not imported, the module has no such top-level class, or the class is not a subclass
            of ``base``.
    """
    prefix = f"The checkpoint {ckpt_path} names the class {class_path!r} in {where}"
    if not isinstance(class_path, str) or "." not in class_path:
        raise MisconfigurationException(
            f"{prefix}, which is not an import path `module.ClassName`. Save the checkpoint again from a"
            f" model of the right class, {_DROP_HINT}"
        )
    module_name, _, name = class_path.rpartition(".")
    if module_name not in sys.modules:
        raise MisconfigurationException(
            f"{prefix}, but module `{module_name}` is not imported. LightningCLI does not import modules named"
            f" by a checkpoint, because importing a module runs its code. If you trust this checkpoint, import"
            f" `{module_name}` in your script before LightningCLI runs (e.g. pass its class to LightningCLI), "
            + _DROP_HINT
        )
    cls = imported_class(class_path)
    if cls is None:
        raise MisconfigurationException(
            f"{prefix}, but the imported module `{module_name}` has no class `{name}` at its top level. Define"
            f" the class at the top level of its module, {_DROP_HINT}"
        )
    if not issubclass(cls, base):
        raise MisconfigurationException(
            f"{prefix}, which is not a subclass of `{base.__module__}.{base.__qualname__}`, the class this CLI"
            f" builds there. Use a checkpoint saved from a `{base.__qualname__}` subclass, {_DROP_HINT}"
        )
    return cls


def check_checkpoint_hparams(hparams: Mapping[str, Any], base: type, ckpt_path: str) -> None:
    """Vet every class ``hparams`` names before they are parsed: ``_class_path`` against ``base``, and each
    nested ``{"class_path": ...}`` entry against ``object`` (any class, but already imported).

    Args:
        hparams: the checkpoint's ``hyper_parameters`` (after ``adapt_checkpoint_hparams``).
        base: the class the CLI builds from them (its model class).
        ckpt_path: the checkpoint file, for messages.

    Raises:
        MisconfigurationException: see :func:`check_checkpoint_class_path`.
    """
    if "_class_path" in hparams:
        check_checkpoint_class_path(hparams["_class_path"], base, "hyper_parameters['_class_path']", ckpt_path)
    for key, value in hparams.items():
        if key != "_class_path":
            _check_nested(value, f"hyper_parameters[{key!r}]", ckpt_path)


def _check_nested(value: Any, where: str, ckpt_path: str) -> None:
    if isinstance(value, Mapping):
        class_path = value.get("class_path")
        # a bare name ("Adam") is resolved by jsonargparse among already-imported subclasses: no import
        if isinstance(class_path, str) and "." in class_path:
            check_checkpoint_class_path(class_path, object, f"{where}['class_path']", ckpt_path)
        for key, item in value.items():
            if key != "class_path":
                _check_nested(item, f"{where}[{key!r}]", ckpt_path)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_nested(item, f"{where}[{index}]", ckpt_path)
