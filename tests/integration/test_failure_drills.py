"""Failure drills: bad arguments, module mistakes and damaged checkpoints fail early and clearly, losing nothing.

Complements test_bad_input.py (Trainer arguments, training_step outputs), the callbacks' own unit tests and
tests/unit/plugins/test_checkpoint_io.py (damaged files at the IO level, full disk, read-only directory).
"""

from __future__ import annotations

import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from tests.helpers.models import ClassifierModule, quiet_trainer
from torchbolt.callbacks import EarlyStopping, ModelCheckpoint
from torchbolt.utilities.exceptions import CorruptCheckpointError, MisconfigurationException

pytestmark = pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")


# ---------------------------------------------------------------------- constructor arguments
@pytest.mark.filterwarnings("ignore:`max_epochs` was not set")
def test_devices_of_a_wrong_type_is_rejected_at_construction() -> None:
    with pytest.raises(MisconfigurationException, match=r"Trainer\(devices=2.5\)` is invalid: expected an int"):
        pl.Trainer(devices=2.5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"filename": "{epoch:zz}"}, r"filename='\{epoch:zz\}'\)` is not a valid template.*format code"),
        ({"filename": "{epoch"}, r"filename='\{epoch'\)` is not a valid template.*expected '\}'"),
        ({"filename": 5}, r"filename=5\)` is invalid: expected a string template"),
        ({"monitor": 5}, r"monitor=5\)` is invalid: expected a string"),
        ({"save_top_k": "2"}, r"save_top_k='2'\)` is invalid: expected an int"),
        ({"every_n_epochs": "1"}, r"every_n_epochs='1'\)` is invalid: expected an int"),
        ({"train_time_interval": 5}, r"train_time_interval=5\)` is invalid: expected a `datetime.timedelta`"),
        ({"save_weights_only": "yes"}, r"save_weights_only='yes'\)` is invalid: expected True or False"),
    ],
)
def test_model_checkpoint_rejects_a_bad_argument_naming_it(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(MisconfigurationException, match=r"ModelCheckpoint\(" + match):
        ModelCheckpoint(**kwargs)


def test_model_checkpoint_filename_with_valid_format_specs_is_accepted() -> None:
    checkpoint = ModelCheckpoint(filename="{epoch:03d}-{val_loss:.2f}", train_time_interval=timedelta(minutes=1))
    assert checkpoint.format_checkpoint_name({"epoch": 3, "val_loss": torch.tensor(0.5)}) == "epoch=003-val_loss=0.50.ckpt"


def test_model_checkpoint_dirpath_that_is_an_existing_file_is_rejected_and_left_intact(tmp_path: Path) -> None:
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    with pytest.raises(MisconfigurationException, match=r"dirpath=.*notes\.txt'\)` is an existing file"):
        ModelCheckpoint(dirpath=precious)
    assert precious.read_text() == "keep me"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"monitor": None}, r"monitor=None\)` is invalid: expected a string"),
        ({"monitor": "loss", "patience": -1}, r"patience=-1\)` is invalid: expected an int >= 0"),
        ({"monitor": "loss", "patience": "3"}, r"patience='3'\)` is invalid"),
        ({"monitor": "loss", "min_delta": "0.1"}, r"min_delta='0.1'\)` is invalid: expected a number"),
        ({"monitor": "loss", "stopping_threshold": "0"}, r"stopping_threshold='0'\)` is invalid"),
        ({"monitor": "loss", "strict": "False"}, r"strict='False'\)` is invalid: expected True or False"),
    ],
)
def test_early_stopping_rejects_a_bad_argument_naming_it(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(MisconfigurationException, match=r"EarlyStopping\(" + match):
        EarlyStopping(**kwargs)


# ---------------------------------------------------------------------- module-side mistakes
def test_training_step_returning_a_dict_with_loss_none_raises_as_in_lightning() -> None:
    class LossNone(ClassifierModule):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return {"loss": None}

    with pytest.raises(MisconfigurationException, match=r"'loss' key needs to be present; got 'loss': None"):
        quiet_trainer(limit_train_batches=2).fit(LossNone())


def test_validation_step_without_a_val_dataloader_warns_and_skips_validation() -> None:
    class NoValLoader(ClassifierModule):
        val_dataloader = pl.LightningModule.val_dataloader

    trainer = quiet_trainer(limit_train_batches=2)
    with pytest.warns(UserWarning, match=r"defined a `validation_step` but have no `val_dataloader`"):
        trainer.fit(NoValLoader())
    assert "train_loss" in trainer.callback_metrics and "val_loss" not in trainer.callback_metrics


def test_an_empty_train_dataloader_warns_and_takes_no_step() -> None:
    empty = DataLoader(TensorDataset(torch.zeros(0, 8), torch.zeros(0, dtype=torch.long)), batch_size=4)
    trainer = quiet_trainer(limit_val_batches=0)
    with pytest.warns(UserWarning, match=r"Total length of `DataLoader` across ranks is zero.*train_dataloader"):
        trainer.fit(ClassifierModule(), empty)
    assert trainer.global_step == 0


# ---------------------------------------------------------------------- damaged or foreign checkpoints
@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("source") / "good.ckpt"
    trainer = quiet_trainer(limit_train_batches=2, limit_val_batches=1)
    trainer.fit(ClassifierModule())
    trainer.save_checkpoint(path)
    return path.read_bytes()


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.999])
def test_resuming_from_a_truncated_checkpoint_names_the_file_and_leaves_it(tmp_path: Path, checkpoint_bytes: bytes,
                                                                           fraction: float) -> None:
    path = tmp_path / "cut.ckpt"
    damaged = checkpoint_bytes[: int(len(checkpoint_bytes) * fraction)]
    path.write_bytes(damaged)
    with pytest.raises(CorruptCheckpointError, match=r"cut\.ckpt is not a readable checkpoint"):
        quiet_trainer(limit_train_batches=2, max_epochs=2).fit(ClassifierModule(), ckpt_path=path)
    assert path.read_bytes() == damaged


def test_loading_a_text_file_as_a_checkpoint_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.ckpt"
    path.write_text("this is not a checkpoint\n")
    with pytest.raises(CorruptCheckpointError, match=r"notes\.ckpt is not a readable checkpoint"):
        ClassifierModule.load_from_checkpoint(path)


def test_ckpt_path_that_is_a_directory_lists_the_checkpoints_inside(tmp_path: Path, checkpoint_bytes: bytes) -> None:
    (tmp_path / "ckpts").mkdir()
    (tmp_path / "ckpts" / "epoch=0-step=2.ckpt").write_bytes(checkpoint_bytes)
    with pytest.raises(IsADirectoryError, match=r"ckpts is a directory.*\['epoch=0-step=2\.ckpt'\]; pass one"):
        quiet_trainer(limit_train_batches=2, max_epochs=2).fit(ClassifierModule(), ckpt_path=tmp_path / "ckpts")


def _with_format(tmp_path: Path, checkpoint_bytes: bytes, version: Any) -> Path:
    source = tmp_path / "source.ckpt"
    source.write_bytes(checkpoint_bytes)
    checkpoint = torch.load(source, weights_only=True)
    checkpoint["torchbolt_format_version"] = version
    path = tmp_path / "future.ckpt"
    torch.save(checkpoint, path)
    return path


def test_a_checkpoint_in_a_newer_format_is_refused_on_resume(tmp_path: Path, checkpoint_bytes: bytes) -> None:
    path = _with_format(tmp_path, checkpoint_bytes, 99)
    before = path.read_bytes()
    with pytest.raises(MisconfigurationException, match=r"future\.ckpt' uses torchbolt checkpoint format 99.*upgrade"):
        quiet_trainer(limit_train_batches=2, max_epochs=2).fit(ClassifierModule(), ckpt_path=path)
    assert path.read_bytes() == before


def test_a_checkpoint_in_an_unknown_format_is_refused_by_load_from_checkpoint(tmp_path: Path,
                                                                               checkpoint_bytes: bytes) -> None:
    path = _with_format(tmp_path, checkpoint_bytes, "v3-beta")
    with pytest.raises(MisconfigurationException, match=r"checkpoint format 'v3-beta'.*reads formats up to"):
        ClassifierModule.load_from_checkpoint(path)


def test_a_checkpoint_of_another_model_lists_the_keys_and_suggests_strict_false(tmp_path: Path,
                                                                                checkpoint_bytes: bytes) -> None:
    class Wider(ClassifierModule):
        def __init__(self, lr: float = 0.1, features: int = 8) -> None:
            super().__init__(lr, features)
            self.head = nn.Linear(2, 2)

    path = tmp_path / "classifier.ckpt"
    path.write_bytes(checkpoint_bytes)
    with pytest.raises(RuntimeError, match=r"(?s)Missing key\(s\).*head\.weight.*does not match Wider.*strict=False"):
        Wider.load_from_checkpoint(path)
    with pytest.warns(UserWarning, match=r"strict=False: missing keys \['head.weight', 'head.bias'\]"):
        model = Wider.load_from_checkpoint(path, strict=False)
    assert torch.equal(model.net[0].weight, torch.load(path, weights_only=True)["state_dict"]["net.0.weight"])


def test_init_arguments_missing_from_the_checkpoint_are_named_with_the_fix(tmp_path: Path) -> None:
    class NoHyperparameters(pl.LightningModule):
        def __init__(self, width: int, *, depth: int) -> None:
            super().__init__()
            self.layer = nn.Linear(width, depth)

    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": NoHyperparameters(4, depth=2).state_dict()}, path)
    with pytest.raises(TypeError, match=r"needs \['width', 'depth'\].*load_from_checkpoint\(path, width=\.\.\., depth"):
        NoHyperparameters.load_from_checkpoint(path)
    assert NoHyperparameters.load_from_checkpoint(path, width=4, depth=2).layer.in_features == 4



def _edited(tmp_path: Path, checkpoint_bytes: bytes, **entries: Any) -> Path:
    """The checkpoint with ``entries`` replaced (``None`` removes one), written to ``edited.ckpt``."""
    source = tmp_path / "source.ckpt"
    source.write_bytes(checkpoint_bytes)
    checkpoint = torch.load(source, weights_only=True)
    for key, value in entries.items():
        key = key.replace("__", "-")
        if value is None:
            checkpoint.pop(key, None)
        else:
            checkpoint[key] = value
    path = tmp_path / "edited.ckpt"
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ({"optimizer_states": {"0": {}}}, r"holds a dict under 'optimizer_states', but it must be a list"),
        ({"optimizer_states": "adam"}, r"holds a str under 'optimizer_states', but it must be a list"),
        ({"optimizer_states": ["adam"]}, r"holds a str at optimizer_states\[0\], but each entry must be the"
                                         r" `state_dict\(\)` of an optimizer"),
        ({"lr_schedulers": {"step": 1}}, r"holds a dict under 'lr_schedulers', but it must be a list"),
    ],
)
def test_training_state_of_the_wrong_type_names_the_key_and_the_file_before_anything_is_restored(
        tmp_path: Path, checkpoint_bytes: bytes, entries: dict[str, Any], match: str) -> None:
    path = _edited(tmp_path, checkpoint_bytes, **entries)
    model = ClassifierModule()
    with pytest.raises(CorruptCheckpointError, match=r"The checkpoint '.*edited\.ckpt' " + match):
        quiet_trainer(limit_train_batches=2, max_epochs=2).fit(model, ckpt_path=path)
    # the file is left as it was, and its weights still load
    assert ClassifierModule.load_from_checkpoint(path) is not None


def test_a_checkpoint_from_a_newer_lightning_release_warns_once_naming_both_versions(tmp_path: Path,
                                                                                     checkpoint_bytes: bytes) -> None:
    # as Lightning writes it: no torchbolt entries
    path = _edited(tmp_path, checkpoint_bytes, pytorch__lightning_version="2.7.1", torchbolt_version=None,
                   torchbolt_format_version=None)
    with pytest.warns(UserWarning, match=r"edited\.ckpt' was written by PyTorch Lightning 2\.7\.1, newer than the"
                                         r" Lightning 2\.6\.x checkpoint layout this torchbolt \(0\.1\.0\) reads"):
        ClassifierModule.load_from_checkpoint(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*newer than")  # once is enough: the same file does not warn again
        quiet_trainer(limit_train_batches=2, max_epochs=2).fit(ClassifierModule(), ckpt_path=path)


def test_a_checkpoint_from_a_newer_torchbolt_warns_naming_both_versions(tmp_path: Path,
                                                                        checkpoint_bytes: bytes) -> None:
    path = _edited(tmp_path, checkpoint_bytes, torchbolt_version="0.3.0")
    with pytest.warns(UserWarning, match=r"edited\.ckpt' was written by torchbolt 0\.3\.0, newer than this torchbolt"
                                         r" \(0\.1\.0\)"):
        quiet_trainer(limit_train_batches=2, max_epochs=2).fit(ClassifierModule(), ckpt_path=path)


@pytest.mark.parametrize("version", ["2.6.6", "2.1.0", "1.9.5"])
def test_a_checkpoint_from_the_same_or_an_older_lightning_release_loads_without_a_version_warning(
        tmp_path: Path, checkpoint_bytes: bytes, version: str) -> None:
    path = _edited(tmp_path, checkpoint_bytes, pytorch__lightning_version=version, torchbolt_version=None,
                   torchbolt_format_version=None)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*newer than")
        ClassifierModule.load_from_checkpoint(path)
