"""Hyperparameters of the plain data types real Lightning checkpoints hold load safely; everything else is refused.

Each checkpoint is written with ``torch.save`` exactly as Lightning pickles it (the value itself, not a
string), then loaded with ``load_from_checkpoint`` and with ``fit(ckpt_path=...)``.
"""

from __future__ import annotations

import argparse
import datetime
import enum
import io
import os
import pickle
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers.models import ClassifierModule, quiet_trainer
from torchbolt.utilities.cloud_io import _load
from torchbolt.utilities.parsing import AttributeDict

pytestmark = pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")


class Optimizer(enum.Enum):
    SGD = "sgd"
    ADAM = "adam"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Configured(ClassifierModule):
    """Accepts one extra hyperparameter of any type and keeps it."""

    def __init__(self, lr: float = 0.1, features: int = 8, extra: Any = None) -> None:
        super().__init__(lr, features)
        self.extra = extra


def _write(path: Path, extra: Any) -> Path:
    """A Lightning 2.x checkpoint of ``Configured`` whose ``hyper_parameters`` hold ``extra`` as it is."""
    model = Configured()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.save({
        "epoch": 0, "global_step": 2, "pytorch-lightning_version": "2.6.6", "state_dict": model.state_dict(),
        "optimizer_states": [optimizer.state_dict()], "lr_schedulers": [],
        "hparams_name": "kwargs", "hyper_parameters": {"lr": 0.1, "features": 8, "extra": extra},
    }, path)
    return path


CASES: dict[str, Any] = {
    "posix_path": Path("/data/train"),
    "pure_posix_path": PurePosixPath("runs/1"),
    "windows_path": PureWindowsPath(r"C:\data\train"),
    "namespace": argparse.Namespace(lr=0.01, root=Path("/data"), layers=[1, 2]),
    "attribute_dict": AttributeDict(lr=0.01, nested=AttributeDict(depth=3)),
    "enum": Optimizer.ADAM,
    "int_enum": Level.HIGH,
    "enums_in_a_list": [Optimizer.SGD, Level.LOW],
    "numpy_float": np.float32(0.25),
    "numpy_int": np.int64(7),
    "numpy_bool": np.bool_(True),
    "numpy_array": np.arange(6, dtype=np.float64).reshape(2, 3),
    "numpy_datetime64": np.datetime64("2024-05-01"),
    "datetime": datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
    "date": datetime.date(2024, 5, 1),
    "time": datetime.time(12, 30),
    "timedelta": datetime.timedelta(hours=3, seconds=5),
}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("kind", list(CASES))
def test_a_plain_data_hyperparameter_loads_with_load_from_checkpoint(tmp_path: Path, kind: str) -> None:
    path = _write(tmp_path / f"{kind}.ckpt", CASES[kind])
    model = Configured.load_from_checkpoint(path)
    assert _same(model.extra, CASES[kind])
    assert _same(model.hparams.extra, CASES[kind])


@pytest.mark.parametrize("kind", ["posix_path", "namespace", "attribute_dict", "enum", "numpy_array", "datetime"])
def test_a_plain_data_hyperparameter_does_not_stop_a_resume_with_ckpt_path(tmp_path: Path, kind: str) -> None:
    path = _write(tmp_path / f"{kind}.ckpt", CASES[kind])
    trainer = quiet_trainer(limit_train_batches=2, limit_val_batches=0, max_epochs=2)
    trainer.fit(Configured(), ckpt_path=path)
    assert trainer.global_step == 4


def test_an_attribute_dict_keeps_attribute_access_and_shared_references(tmp_path: Path) -> None:
    shared = AttributeDict(depth=3)
    path = _write(tmp_path / "ad.ckpt", {"a": shared, "b": shared, "t": (shared, 1)})
    extra = Configured.load_from_checkpoint(path).extra
    assert isinstance(extra["a"], AttributeDict) and extra["a"].depth == 3
    assert extra["a"] is extra["b"] is extra["t"][0]


@contextmanager
def _fake_module(name: str, **attributes: Any) -> Iterator[types.ModuleType]:
    """Make ``name`` (and its parents) importable while a checkpoint is written, and gone afterwards."""
    parts = name.split(".")
    added = [".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) not in sys.modules]
    for module_name in added:
        sys.modules[module_name] = types.ModuleType(module_name)
    module = sys.modules[name]
    for key, value in attributes.items():
        setattr(module, key, value)
    try:
        yield module
    finally:
        for module_name in added:
            del sys.modules[module_name]


def _lightning_style_attribute_dict(module_name: str) -> type:
    """A class pickled like Lightning's ``AttributeDict``: a dict subclass without pickling methods of its own."""

    def __getattr__(self: dict[str, Any], key: str) -> Any:
        return self[key]

    return type("AttributeDict", (dict,), {"__getattr__": __getattr__, "__module__": module_name})


@pytest.mark.parametrize("module_name", ["lightning.fabric.utilities.data", "lightning_fabric.utilities.data",
                                         "pytorch_lightning.utilities.parsing"])
def test_lightning_attribute_dicts_load_as_torchbolts_without_importing_lightning(tmp_path: Path,
                                                                                  module_name: str) -> None:
    path = tmp_path / "lightning.ckpt"
    lightning_class = _lightning_style_attribute_dict(module_name)
    with _fake_module(module_name, AttributeDict=lightning_class):
        _write(path, lightning_class(lr=0.5, sizes=[4, 8]))
    assert f"{module_name} AttributeDict".encode() in path.read_bytes().replace(b"\n", b" ")
    top = module_name.split(".")[0]
    assert top not in sys.modules
    extra = Configured.load_from_checkpoint(path).extra
    assert type(extra) is AttributeDict and extra.lr == 0.5 and extra.sizes == [4, 8]
    assert top not in sys.modules  # loading never imports a module the file names


def test_an_enum_from_a_module_that_is_not_imported_is_refused_and_the_module_is_not_imported(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "user_enums.py").write_text(
        "import enum, pathlib\n"
        f"pathlib.Path({str(marker)!r}).touch()\n"
        "class Mode(enum.Enum):\n    FAST = 'fast'\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import user_enums  # type: ignore[import-not-found]

        path = _write(tmp_path / "enum.ckpt", user_enums.Mode.FAST)
        del sys.modules["user_enums"]
        marker.unlink()
        with pytest.raises(pickle.UnpicklingError,
                           match=r"Refused to load .*enum\.ckpt: it holds a reference to `user_enums\.Mode`, which could"
                                 r" run code.*an Enum loads once the module defining it is imported"):
            Configured.load_from_checkpoint(path)
        assert not marker.exists()
        import user_enums  # the user's code imports it: now it loads

        assert Configured.load_from_checkpoint(path).extra is user_enums.Mode.FAST
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("user_enums", None)


class Guarded(enum.Enum):
    """An enum whose own lookup code must never run during a load."""

    ON = "on"

    @classmethod
    def _missing_(cls, value: object) -> Any:
        raise AssertionError(f"_missing_ ran for {value!r}")


class _GuardedByValue:
    """Pickles as ``Guarded(value)``, as an enum member with that value would."""

    def __init__(self, value: str) -> None:
        self.value = value

    def __reduce__(self) -> Any:
        return (Guarded, (self.value,))


def test_an_enum_value_that_is_no_member_loads_as_the_plain_value_without_running_the_enums_code(
        tmp_path: Path) -> None:
    path = _write(tmp_path / "renamed.ckpt", [_GuardedByValue("on"), _GuardedByValue("off")])
    with pytest.warns(UserWarning, match=r"Guarded\('off'\), but 'off' is not a value of .*Guarded now"):
        extra = Configured.load_from_checkpoint(path).extra
    assert extra == [Guarded.ON, "off"]


def test_other_objects_are_still_refused_naming_what_the_file_refers_to(tmp_path: Path) -> None:
    from fractions import Fraction

    path = _write(tmp_path / "fraction.ckpt", Fraction(1, 3))
    with pytest.raises(pickle.UnpicklingError, match=r"holds a reference to `fractions\.Fraction`, which could run"
                                                     r" code.*weights_only=False"):
        Configured.load_from_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError, match=r"fractions\.Fraction"):
        quiet_trainer(limit_train_batches=2, max_epochs=2).fit(Configured(), ckpt_path=path)
    assert Configured.load_from_checkpoint(path, weights_only=False).extra == Fraction(1, 3)


def test_a_numpy_object_array_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "objects.ckpt", np.array([1, "a"], dtype=object))
    with pytest.raises(pickle.UnpicklingError, match=r"holds a reference to `numpy\.dtypes\.ObjectDType`"):
        Configured.load_from_checkpoint(path)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch notes the unusual protocol
@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_a_plain_pickle_with_a_payload_is_refused_naming_the_function_not_called_corrupt(tmp_path: Path,
                                                                                         protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": {}, "x": _Payload(marker)}, protocol=protocol))
    with pytest.raises(pickle.UnpicklingError, match=r"Refused to load .*evil\.ckpt: it holds a reference to"
                                                     r" `posix\.system`, which could run code"):
        _load(path)
    assert not marker.exists()


def test_the_allowlist_is_only_in_force_during_a_load_and_keeps_the_callers_entries(tmp_path: Path) -> None:
    path = _write(tmp_path / "path.ckpt", Path("/data"))

    class Mine:
        pass

    torch.serialization.add_safe_globals([Mine])
    try:
        before = torch.serialization.get_safe_globals()
        assert Configured.load_from_checkpoint(path).extra == Path("/data")
        assert set(torch.serialization.get_safe_globals()) == set(before)
        with pytest.raises(pickle.UnpicklingError, match=r"PosixPath"):  # plain torch.load is unaffected
            torch.load(path, weights_only=True)
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals([g for g in before if g is not Mine])


def test_a_namespace_saved_as_the_whole_hyperparameters_is_passed_as_keyword_arguments(tmp_path: Path) -> None:
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": Configured().state_dict(),
                "hyper_parameters": argparse.Namespace(lr=0.3, features=8, extra="x")}, path)
    model = Configured.load_from_checkpoint(path)
    assert model.hparams.lr == 0.3 and model.extra == "x"


def test_loading_twice_from_memory_gives_equal_values(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"hp": CASES["namespace"]}, buffer)
    first = _load(io.BytesIO(buffer.getvalue()))
    second = _load(io.BytesIO(buffer.getvalue()))
    assert first == second == {"hp": CASES["namespace"]}
