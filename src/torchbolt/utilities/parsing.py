"""Small parsing helpers shared across the package."""

from __future__ import annotations

from typing import Any


class AttributeDict(dict[str, Any]):
    """A dict whose keys can also be read and written as attributes (``hparams.lr``).

    Example::

        >>> d = AttributeDict(lr=0.1)
        >>> d.lr
        0.1
    """

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as e:
            raise AttributeError(f"Missing attribute {key!r}") from e

    def __setattr__(self, key: str, val: Any) -> None:
        self[key] = val

    def __delattr__(self, key: str) -> None:
        try:
            del self[key]
        except KeyError as e:
            raise AttributeError(f"Missing attribute {key!r}") from e

    def __repr__(self) -> str:
        if not self:
            return ""
        width = max(len(str(k)) for k in self)
        return "\n".join(f'"{k}":'.ljust(width + 3) + f" {v}" for k, v in sorted(self.items(), key=lambda kv: str(kv[0])))

    def __getstate__(self) -> dict[str, Any]:
        return dict(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.update(state)


_BASES = {("torchbolt.core.module", "LightningModule"), ("torchbolt.core.datamodule", "LightningDataModule"),
          ("torchbolt.callbacks.callback", "Callback")}


def is_overridden(method_name: str, instance: object, parent: type | None = None) -> bool:
    """Whether ``instance``'s class overrides ``method_name`` of ``parent`` (or its own base class).

    Used once per run to build the hook dispatch tables, never on the per-batch path.
    """
    if instance is None:
        return False
    if parent is None:
        # the torchbolt base class in the instance's ancestry (found by name: this low-level helper does not
        # import the classes it knows about)
        parent = next((cls for cls in type(instance).__mro__ if (cls.__module__, cls.__qualname__) in _BASES), None)
        if parent is None:
            raise ValueError("Expected a parent class to compare with")
    instance_attr = getattr(instance, method_name, None)
    if instance_attr is None:
        return False
    # an attribute assigned on the instance (e.g. a mock, or a lambda) always counts as an override
    if method_name in getattr(instance, "__dict__", {}):
        return True
    parent_attr = getattr(parent, method_name, None)
    if parent_attr is None:
        return True
    instance_fn = getattr(instance_attr, "__func__", instance_attr)
    return instance_fn is not parent_attr


def _attr_holders(model: Any, attribute: str) -> list[Any]:
    """Every object that holds ``attribute``: the model, its ``hparams``, the datamodule, its ``hparams``.

    The datamodule (the model's Trainer's) comes last, so it wins when reading.
    """
    holders: list[Any] = []
    if hasattr(model, attribute):
        holders.append(model)
    hparams = getattr(model, "_hparams", None)
    if hparams is not None and _has_key(hparams, attribute):
        holders.append(hparams)
    trainer = getattr(model, "_trainer", None)
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    if datamodule is not None:
        if hasattr(datamodule, attribute):
            holders.append(datamodule)
        dm_hparams = getattr(datamodule, "_hparams", None)
        if dm_hparams is not None and _has_key(dm_hparams, attribute):
            holders.append(dm_hparams)
    return holders


def _has_key(container: Any, key: str) -> bool:
    if isinstance(container, dict):
        return key in container
    return hasattr(container, key)


def lightning_hasattr(model: Any, attribute: str) -> bool:
    """Whether ``attribute`` is on the model, in ``model.hparams``, on the datamodule or in its ``hparams``."""
    return bool(_attr_holders(model, attribute))


def lightning_getattr(model: Any, attribute: str) -> Any:
    """Read ``attribute`` from where :func:`lightning_hasattr` finds it (the datamodule's value wins).

    Raises:
        AttributeError: when none of the four places holds it.
    """
    holders = _attr_holders(model, attribute)
    if not holders:
        raise AttributeError(
            f"{attribute} is neither stored in the model namespace nor the `hparams` namespace/dict, nor the"
            " datamodule."
        )
    holder = holders[-1]
    if isinstance(holder, dict):
        return holder[attribute]
    return getattr(holder, attribute)


def lightning_setattr(model: Any, attribute: str, value: Any) -> None:
    """Set ``attribute`` to ``value`` everywhere :func:`lightning_hasattr` finds it (model, hparams, datamodule).

    Example::

        lightning_setattr(model, "lr", 3e-4)   # updates model.lr and model.hparams.lr when both exist

    Raises:
        AttributeError: when none of the four places holds it.
    """
    holders = _attr_holders(model, attribute)
    if not holders:
        raise AttributeError(
            f"{attribute} is neither stored in the model namespace nor the `hparams` namespace/dict, nor the"
            " datamodule."
        )
    for holder in holders:
        if isinstance(holder, dict):
            holder[attribute] = value
        else:
            setattr(holder, attribute, value)
