"""Readers for what loggers wrote, using each tool's own file formats and readers."""

from __future__ import annotations

import glob
import json
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def tb_scalars() -> Callable[[str], dict[str, list[tuple[int, float]]]]:
    """``{tag: [(step, value), ...]}`` read from a directory of TensorBoard event files with tensorboard's reader."""

    def read(log_dir: str) -> dict[str, list[tuple[int, float]]]:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(log_dir))
        acc.Reload()
        return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}

    return read


@pytest.fixture
def tb_hparams() -> Callable[[str], dict[str, Any]]:
    """The hyperparameters TensorBoard's HPARAMS tab shows for a run directory."""

    def read(log_dir: str) -> dict[str, Any]:
        from google.protobuf import json_format
        from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
        from tensorboard.plugins.hparams import plugin_data_pb2

        acc = EventAccumulator(str(log_dir))
        acc.Reload()
        content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
        return {k: json_format.MessageToDict(v) for k, v in info.hparams.items()}

    return read


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """wandb fully offline and quiet, with every directory it writes under ``tmp_path``."""
    root = tmp_path / "wandb_home"
    for var, value in {
        "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off", "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true", "WANDB_X_DISABLE_STATS": "true", "WANDB_X_DISABLE_META": "true",
        "WANDB_DIR": str(root), "WANDB_DATA_DIR": str(root / "data"), "WANDB_CACHE_DIR": str(root / "cache"),
        "WANDB_CONFIG_DIR": str(root / "config"), "WANDB_ARTIFACT_DIR": str(root / "artifacts"),
    }.items():
        monkeypatch.setenv(var, value)
    yield root
    import wandb

    if wandb.run is not None:
        wandb.finish()


@pytest.fixture
def wandb_records() -> Callable[[str], list[tuple[str, Any]]]:
    """The records of an offline run: ``[(kind, protobuf), ...]`` from its ``run-<id>.wandb`` file.

    The file is the log ``wandb sync`` uploads: a 7-byte header, then LevelDB-style 32 KiB blocks of
    chunks (``crc32 | length | type | data``), each record a ``wandb_internal_pb2.Record``.
    """

    def read(run_dir: str) -> list[tuple[str, Any]]:
        # wandb's service process writes the file asynchronously: wait for the run's final "exit" record
        deadline = time.monotonic() + 30
        while True:
            records = _parse(run_dir)
            if any(kind == "exit" for kind, _ in records) or time.monotonic() > deadline:
                return records
            time.sleep(0.05)

    def _parse(run_dir: str) -> list[tuple[str, Any]]:
        from wandb.proto import wandb_internal_pb2

        (path,) = glob.glob(os.path.join(run_dir, "run-*.wandb"))
        data = Path(path).read_bytes()
        assert data[:4] == b":W&B"
        block, pos, pending, payloads = 32768, 7, b"", []
        while pos + 7 <= len(data):
            if block - pos % block < 7:  # block trailer too short for a header: skip to the next block
                pos += block - pos % block
                continue
            _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            chunk = data[pos + 7:pos + 7 + length]
            pos += 7 + length
            if kind == 1:  # full
                payloads.append(chunk)
            elif kind == 2:  # first
                pending = chunk
            elif kind == 3:  # middle
                pending += chunk
            elif kind == 4:  # last
                payloads.append(pending + chunk)
            else:
                pos += block - pos % block
        records = []
        for payload in payloads:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            kind = record.WhichOneof("record_type")
            records.append((kind, getattr(record, kind)))
        return records

    return read


@pytest.fixture
def wandb_history() -> Callable[[list[tuple[str, Any]]], list[dict[str, Any]]]:
    """The rows ``run.log`` wrote, decoded from a run's records."""

    def rows(records: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for kind, rec in records:
            if kind == "history":
                out.append({"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in rec.item})
        return out

    return rows
