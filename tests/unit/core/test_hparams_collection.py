"""Which arguments ``save_hyperparameters`` stores, and how a config object comes back from a checkpoint."""

from __future__ import annotations

from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

import torchbolt as pl
from torchbolt.core.mixins import HyperparametersMixin
from torchbolt.demos.boring_classes import BoringModel


class Base(BoringModel):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()


class Child(Base):
    def __init__(self, *args: Any, depth: int = 3, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.save_hyperparameters()


class FromConfig(BoringModel):
    def __init__(self, config: Any) -> None:
        super().__init__()
        self.save_hyperparameters(config)


def test_a_second_call_adds_to_what_the_base_class_stored() -> None:
    assert dict(Child().hparams) == {"width": 8, "depth": 3}
    assert dict(Child(width=2).hparams) == {"width": 2, "depth": 3}


def test_a_subclass_can_drop_a_base_class_hyperparameter() -> None:
    class Narrow(Base):
        def __init__(self, width: int = 8, colour: str = "red") -> None:
            super().__init__(width)
            self.save_hyperparameters(ignore=["width"])

    assert dict(Narrow().hparams) == {"colour": "red"}


def test_an_object_built_inside_another_init_sees_the_outer_arguments() -> None:
    class Inner(HyperparametersMixin):
        def __init__(self, rate: float, noise: float) -> None:
            super().__init__()
            self.save_hyperparameters(ignore="noise")

    class Outer(HyperparametersMixin):
        def __init__(self, steps: int) -> None:
            super().__init__()
            self.inner = Inner(rate=0.5, noise=0.1)

    assert dict(Outer(steps=4).inner.hparams) == {"rate": 0.5, "steps": 4}


@pytest.mark.parametrize("config", [{"size": 5}, Namespace(size=5)])
def test_a_config_object_comes_back_under_its_argument_name(tmp_path: Path, config: Any) -> None:
    model = FromConfig(config)
    assert model.hparams.size == 5
    trainer = pl.Trainer(default_root_dir=tmp_path, max_steps=1, limit_val_batches=0, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(model)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    assert torch.load(path, weights_only=False)["hparams_name"] == "config"
    assert FromConfig.load_from_checkpoint(path).hparams.size == 5


def test_an_empty_config_stores_nothing() -> None:
    class Empty(BoringModel):
        def __init__(self, config: dict[str, Any]) -> None:
            super().__init__()
            self.save_hyperparameters(config)

    assert dict(Empty({}).hparams) == {}


@pytest.mark.parametrize("value", [3, 2.5, True])
def test_a_primitive_is_refused(value: Any) -> None:
    with pytest.raises(ValueError, match=r"Primitives \(<class 'bool'>"):
        FromConfig(value)


def test_a_dataclass_module_stores_its_init_fields() -> None:
    @dataclass(eq=False)
    class Fields(BoringModel):
        size: int = 4
        tag: str = "x"
        cache: list[int] = field(default_factory=list, init=False)

        def __post_init__(self) -> None:
            super().__init__()
            self.save_hyperparameters()

    assert dict(Fields(size=7).hparams) == {"size": 7, "tag": "x"}


def test_an_instance_argument_not_named_self_round_trips(tmp_path: Path) -> None:
    class Unusual(BoringModel):
        def __init__(obj, size: int = 3) -> None:  # the unusual instance name is the point
            super().__init__()
            obj.save_hyperparameters()

    model = Unusual(size=6)
    assert dict(model.hparams) == {"size": 6}
    trainer = pl.Trainer(default_root_dir=tmp_path, max_steps=1, limit_val_batches=0, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(model)
    trainer.save_checkpoint(tmp_path / "u.ckpt")
    assert Unusual.load_from_checkpoint(tmp_path / "u.ckpt").hparams.size == 6
