"""A checkpoint whose bytes changed after it was written (one flipped bit) never loads silently."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers.models import ClassifierModule, quiet_trainer
from torchbolt.callbacks import ModelCheckpoint
from torchbolt.plugins.io import TorchCheckpointIO
from torchbolt.utilities.checkpoint_integrity import ChecksumMismatchError, verify_archive
from torchbolt.utilities.cloud_io import _load
from torchbolt.utilities.exceptions import CorruptCheckpointError

pytestmark = pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")


def _record_start(data: bytes, record: zipfile.ZipInfo) -> int:
    """Offset of a stored record's first data byte (after its local header)."""
    name_length, extra_length = struct.unpack("<HH", data[record.header_offset + 26:record.header_offset + 30])
    return record.header_offset + 30 + name_length + extra_length


def _record(data: bytes, suffix: str = "", size: int | None = None) -> zipfile.ZipInfo:
    """The one record whose name ends with ``suffix`` (and, if given, whose size is ``size`` bytes)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        matches = [r for r in archive.infolist() if r.filename.endswith(suffix) and size in (None, r.file_size)]
    assert len(matches) == 1, [r.filename for r in matches]
    return matches[0]


def _flip_bit(data: bytes, record: zipfile.ZipInfo, byte: int = 0, bit: int = 0) -> bytes:
    damaged = bytearray(data)
    damaged[_record_start(data, record) + byte] ^= 1 << bit
    return bytes(damaged)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[ClassifierModule, bytes]:
    """A module after two steps and the checkpoint ``Trainer.save_checkpoint`` wrote for it."""
    path = tmp_path_factory.mktemp("source") / "good.ckpt"
    model = ClassifierModule()
    trainer = quiet_trainer(limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model)
    trainer.save_checkpoint(path)
    return model, path.read_bytes()


def _first_layer_weight_damaged(data: bytes) -> bytes:
    # net.0.weight is the only 16 x 8 float32 tensor (512 bytes) of ClassifierModule's checkpoint
    return _flip_bit(data, _record(data, size=16 * 8 * 4), byte=200, bit=3)


def test_the_unchecked_loader_would_load_the_flipped_bit_as_a_different_weight(trained: tuple[ClassifierModule, bytes]
                                                                                ) -> None:
    # why the check exists: torch.load itself does not look at the zip checksums
    model, data = trained
    loaded = torch.load(io.BytesIO(_first_layer_weight_damaged(data)), weights_only=True)
    assert not torch.equal(loaded["state_dict"]["net.0.weight"], model.net[0].weight)


def test_resuming_from_a_checkpoint_with_one_flipped_bit_names_the_file_and_the_tensor(
        tmp_path: Path, trained: tuple[ClassifierModule, bytes]) -> None:
    _, data = trained
    path = tmp_path / "rotten.ckpt"
    path.write_bytes(_first_layer_weight_damaged(data))
    before = path.read_bytes()
    with pytest.raises(ChecksumMismatchError,
                       match=r"rotten\.ckpt is corrupt: its bytes changed after it was written: record '[^']*/data/\d+'"
                             r" \(the data of tensor `state_dict\.net\.0\.weight`\) has CRC-32 0x[0-9a-f]{8} but was"
                             r" written with 0x[0-9a-f]{8}.*TORCHBOLT_VERIFY_CHECKPOINTS=0"):
        quiet_trainer(limit_train_batches=2, max_epochs=2).fit(ClassifierModule(), ckpt_path=path)
    assert path.read_bytes() == before


def test_load_from_checkpoint_refuses_a_flipped_bit_as_a_corrupt_checkpoint(
        tmp_path: Path, trained: tuple[ClassifierModule, bytes]) -> None:
    _, data = trained
    path = tmp_path / "rotten.ckpt"
    path.write_bytes(_first_layer_weight_damaged(data))
    with pytest.raises(CorruptCheckpointError, match=r"state_dict\.net\.0\.weight"):
        ClassifierModule.load_from_checkpoint(path)


def test_a_flipped_bit_in_a_model_checkpoint_file_is_caught_when_loading_the_best_model(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=1)
    quiet_trainer(limit_train_batches=2, limit_val_batches=1, callbacks=[checkpoint],
                  enable_checkpointing=True).fit(ClassifierModule())
    best = Path(checkpoint.best_model_path)
    assert ClassifierModule.load_from_checkpoint(best) is not None  # intact: loads
    data = best.read_bytes()
    # net.2.bias: 2 floats; flip the sign bit of the second
    best.write_bytes(_flip_bit(data, _record(data, size=2 * 4), byte=7, bit=7))
    with pytest.raises(ChecksumMismatchError, match=r"tensor `state_dict\.net\.2\.bias`"):
        ClassifierModule.load_from_checkpoint(best)


def test_a_flipped_bit_in_the_pickled_structure_is_named_as_such(tmp_path: Path,
                                                                 trained: tuple[ClassifierModule, bytes]) -> None:
    _, data = trained
    path = tmp_path / "rotten.ckpt"
    # a bit inside a key string: still a valid pickle, so only the checksum can tell
    pkl = _record(data, "/data.pkl")
    offset = data.index(b"global_step", _record_start(data, pkl)) - _record_start(data, pkl)
    path.write_bytes(_flip_bit(data, pkl, byte=offset, bit=0))
    with pytest.raises(ChecksumMismatchError, match=r"data\.pkl' \(the pickled structure"):
        _load(path)


def test_the_check_can_be_turned_off_by_environment_variable_and_by_plugin_argument(
        tmp_path: Path, trained: tuple[ClassifierModule, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    model, data = trained
    path = tmp_path / "rotten.ckpt"
    path.write_bytes(_first_layer_weight_damaged(data))
    loaded = TorchCheckpointIO(verify_checksums=False).load_checkpoint(path)
    assert not torch.equal(loaded["state_dict"]["net.0.weight"], model.net[0].weight)
    with pytest.raises(ChecksumMismatchError):
        TorchCheckpointIO(verify_checksums=True).load_checkpoint(path)
    trainer = quiet_trainer(limit_train_batches=2, max_epochs=2, plugins=[TorchCheckpointIO(verify_checksums=False)])
    trainer.fit(ClassifierModule(), ckpt_path=path)
    assert trainer.global_step == 4
    monkeypatch.setenv("TORCHBOLT_VERIFY_CHECKPOINTS", "0")
    assert ClassifierModule.load_from_checkpoint(path) is not None
    with pytest.raises(TypeError, match=r"verify_checksums='no'\)` is invalid"):
        TorchCheckpointIO(verify_checksums="no")  # type: ignore[arg-type]


def test_an_intact_checkpoint_loads_unchanged_with_the_check_on(tmp_path: Path,
                                                               trained: tuple[ClassifierModule, bytes]) -> None:
    model, data = trained
    path = tmp_path / "good.ckpt"
    path.write_bytes(data)
    restored = ClassifierModule.load_from_checkpoint(path)
    for name, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value)
    trainer = quiet_trainer(limit_train_batches=2, max_epochs=2)
    trainer.fit(ClassifierModule(), ckpt_path=path)
    assert trainer.global_step == 4


def _lightning_style(tmp_path: Path, **save_kwargs: Any) -> tuple[Path, dict[str, torch.Tensor]]:
    weights = {"net.0.weight": torch.randn(16, 8), "net.0.bias": torch.randn(16), "net.2.weight": torch.randn(2, 16),
               "net.2.bias": torch.randn(2)}
    path = tmp_path / "lightning.ckpt"
    torch.save({"epoch": 0, "global_step": 2, "pytorch-lightning_version": "2.6.6", "state_dict": weights,
                "hyper_parameters": {"lr": 0.1, "features": 8}}, path, **save_kwargs)
    return path, weights


def test_a_checkpoint_written_without_torchbolt_is_verified_too(tmp_path: Path) -> None:
    # every zip-format torch.save file carries the checksums: Lightning's and older torchbolt's included
    path, weights = _lightning_style(tmp_path)
    assert torch.equal(ClassifierModule.load_from_checkpoint(path).net[2].bias, weights["net.2.bias"])
    data = path.read_bytes()
    path.write_bytes(_flip_bit(data, _record(data, size=2 * 4)))
    with pytest.raises(ChecksumMismatchError, match=r"lightning\.ckpt is corrupt.*`state_dict\.net\.2\.bias`"):
        ClassifierModule.load_from_checkpoint(path)


def test_files_without_checksums_load_unverified(tmp_path: Path) -> None:
    legacy, weights = _lightning_style(tmp_path, _use_new_zipfile_serialization=False)
    assert torch.equal(ClassifierModule.load_from_checkpoint(legacy).net[0].bias, weights["net.0.bias"])
    serialization_config = pytest.importorskip("torch.utils.serialization").config
    with serialization_config.patch({"save.compute_crc32": False}):  # every stored CRC is then 0
        path, weights = _lightning_style(tmp_path)
    with zipfile.ZipFile(path) as archive:
        assert {r.CRC for r in archive.infolist()} == {0}
    assert torch.equal(ClassifierModule.load_from_checkpoint(path).net[0].bias, weights["net.0.bias"])


def test_a_large_checkpoint_is_verified_next_to_the_load_and_still_caught(tmp_path: Path) -> None:
    # 12 MB: above the size where the check runs on a second thread
    big = {"state_dict": {"a": torch.zeros(1_000_000), "b": torch.ones(2_000_000)}}
    path = tmp_path / "big.ckpt"
    TorchCheckpointIO().save_checkpoint(big, path)
    assert torch.equal(_load(path)["state_dict"]["b"], big["state_dict"]["b"])
    data = path.read_bytes()
    path.write_bytes(_flip_bit(data, _record(data, size=2_000_000 * 4), byte=5_000_000, bit=6))
    with pytest.raises(ChecksumMismatchError, match=r"tensor `state_dict\.b`"):
        _load(path)


def test_damage_to_several_records_lists_each(tmp_path: Path, trained: tuple[ClassifierModule, bytes]) -> None:
    _, data = trained
    damaged = _flip_bit(_first_layer_weight_damaged(data), _record(data, size=2 * 4), byte=1)
    with pytest.raises(ChecksumMismatchError, match=r"`state_dict\.net\.0\.weight`.*; record .*`state_dict\.net\.2"
                                                    r"\.bias`"):
        verify_archive(damaged, "two.ckpt")


def test_a_truncated_file_is_still_reported_as_unreadable(tmp_path: Path, trained: tuple[ClassifierModule, bytes]
                                                          ) -> None:
    _, data = trained
    path = tmp_path / "cut.ckpt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match=r"cut\.ckpt is not a readable checkpoint"):
        _load(path)


def test_a_file_object_is_verified_like_a_path(trained: tuple[ClassifierModule, bytes]) -> None:
    _, data = trained
    with pytest.raises(ChecksumMismatchError, match=r"the BytesIO passed in is corrupt"):
        _load(io.BytesIO(_first_layer_weight_damaged(data)))


def test_every_crc32_implementation_catches_the_damage(trained: tuple[ClassifierModule, bytes],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # the SIMD packages (zlib-ng, isal) are used when installed; the standard library's zlib otherwise
    import zlib

    from torchbolt.utilities import checkpoint_integrity

    _, data = trained
    fast, name = checkpoint_integrity.crc32_implementation()
    assert name in ("zlib-ng", "isal", "zlib")
    assert fast(data) == zlib.crc32(data)
    damaged = _first_layer_weight_damaged(data)
    monkeypatch.setattr(checkpoint_integrity, "_crc32_choice", (zlib.crc32, "zlib"))
    with pytest.raises(ChecksumMismatchError, match=r"`state_dict\.net\.0\.weight`"):
        verify_archive(damaged, "rotten.ckpt")
    verify_archive(data, "good.ckpt")
