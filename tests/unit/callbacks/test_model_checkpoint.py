"""``ModelCheckpoint``: every argument's effect on which files exist, and its state across a resume."""

from __future__ import annotations

import math
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import torchbolt as pl
from torchbolt.callbacks import Callback, ModelCheckpoint
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.loggers import CSVLogger
from torchbolt.utilities.exceptions import MisconfigurationException


class Scripted(BoringModel):
    """Logs ``val_score`` = ``scores[current_epoch]`` in validation."""

    def __init__(self, scores: list[float] | None = None, sleep: float = 0.0) -> None:
        super().__init__()
        self.scores = scores or [0.0] * 10
        self.sleep = sleep

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        if self.sleep:
            time.sleep(self.sleep)
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        self.log("val_score", torch.tensor(self.scores[self.current_epoch]))
        return super().validation_step(batch, batch_idx)


class Snapshots(Callback):
    """The checkpoint files present at the start of every epoch after the first, and at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.listings: list[list[str]] = []

    def _snapshot(self) -> None:
        self.listings.append(sorted(os.listdir(self.directory)))

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.current_epoch > 0:
            self._snapshot()

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._snapshot()


def fit(tmp_path: Path, checkpoint: ModelCheckpoint, model: pl.LightningModule | None = None,
        callbacks: list[Callback] | None = None, **kwargs: Any) -> pl.Trainer:
    options: dict[str, Any] = {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "logger": False,
                               "enable_progress_bar": False, "enable_model_summary": False,
                               "num_sanity_val_steps": 0, "default_root_dir": str(tmp_path)}
    options.update(kwargs)
    trainer = pl.Trainer(callbacks=[*(callbacks or []), checkpoint], **options)
    trainer.fit(model or Scripted())
    return trainer


def names(directory: Path | str) -> list[str]:
    return sorted(os.listdir(directory))


def test_default_dirpath_is_the_checkpoints_folder_of_the_loggers_version(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint()
    fit(tmp_path, checkpoint, logger=CSVLogger(tmp_path, name="lightning_logs"))
    assert checkpoint.dirpath == str(tmp_path / "lightning_logs" / "version_0" / "checkpoints")
    assert names(checkpoint.dirpath) == ["epoch=0-step=2.ckpt"]


def test_default_dirpath_without_a_logger_is_default_root_dir_checkpoints(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint()
    fit(tmp_path, checkpoint)
    assert checkpoint.dirpath == str(tmp_path / "checkpoints")


def test_filename_template_inserts_metric_names_and_formats_values(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", filename="{epoch}-{step}-{val_score:.2f}")
    fit(tmp_path, checkpoint, Scripted([0.12345]))
    assert names(tmp_path / "ck") == ["epoch=0-step=2-val_score=0.12.ckpt"]


def test_auto_insert_metric_name_false_keeps_the_template_verbatim(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", filename="e{epoch:02d}_s{val_score:.1f}",
                                 auto_insert_metric_name=False)
    fit(tmp_path, checkpoint, Scripted([5.0]))
    assert names(tmp_path / "ck") == ["e00_s5.0.ckpt"]


def test_format_checkpoint_name_handles_dots_slashes_missing_keys_and_versions() -> None:
    checkpoint = ModelCheckpoint(dirpath="/ck", filename="{epoch}-{val/loss:.2f}-{missing}")
    assert checkpoint.format_checkpoint_name({"epoch": 3, "val/loss": 0.5}) == "/ck/epoch=3-val/loss=0.50-missing=0.ckpt"
    plain = ModelCheckpoint(dirpath="/ck", filename="{epoch_test}-{epoch}", auto_insert_metric_name=False)
    assert plain.format_checkpoint_name({"epoch": 1, "epoch_test": 7}, ver=2) == "/ck/7-1-v2.ckpt"


def test_top_k_keeps_the_best_k_and_replaces_the_worst_one_each_time(tmp_path: Path) -> None:
    directory = tmp_path / "ck"
    checkpoint = ModelCheckpoint(dirpath=directory, monitor="val_score", save_top_k=2, filename="{epoch}")
    snapshots = Snapshots(directory)
    fit(tmp_path, checkpoint, Scripted([5, 3, 4, 1, 2]), [snapshots], max_epochs=5)
    assert snapshots.listings == [
        ["epoch=0.ckpt"],
        ["epoch=0.ckpt", "epoch=1.ckpt"],
        ["epoch=1.ckpt", "epoch=2.ckpt"],  # 4 beat 5
        ["epoch=1.ckpt", "epoch=3.ckpt"],  # 1 beat 4
        ["epoch=3.ckpt", "epoch=4.ckpt"],  # 2 beat 3
    ]
    assert checkpoint.best_model_path == str(directory / "epoch=3.ckpt")
    assert checkpoint.best_model_score == 1
    assert checkpoint.kth_best_model_path == str(directory / "epoch=4.ckpt") and checkpoint.kth_value == 2
    assert {os.path.basename(p): float(v) for p, v in checkpoint.best_k_models.items()} == {
        "epoch=3.ckpt": 1.0, "epoch=4.ckpt": 2.0}


def test_mode_max_keeps_the_largest_values(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_score", mode="max", filename="{epoch}")
    fit(tmp_path, checkpoint, Scripted([1, 3, 2]), max_epochs=3)
    assert names(tmp_path / "ck") == ["epoch=1.ckpt"]


def test_a_nan_score_ranks_worst(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_score", filename="{epoch}")
    fit(tmp_path, checkpoint, Scripted([math.nan, 9.0]), max_epochs=2)
    assert names(tmp_path / "ck") == ["epoch=1.ckpt"]


def test_save_top_k_zero_writes_only_last(tmp_path: Path) -> None:
    fit(tmp_path, ModelCheckpoint(dirpath=tmp_path / "ck", save_top_k=0, save_last=True), max_epochs=2)
    assert names(tmp_path / "ck") == ["last.ckpt"]


def test_save_top_k_minus_one_keeps_every_checkpoint(tmp_path: Path) -> None:
    fit(tmp_path, ModelCheckpoint(dirpath=tmp_path / "ck", save_top_k=-1, filename="{epoch}"), max_epochs=3)
    assert names(tmp_path / "ck") == ["epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt"]


def test_save_last_follows_the_newest_top_k_checkpoint(tmp_path: Path) -> None:
    # Lightning 2.6: `last` is written with a top-k file, not at steps whose score did not enter the top k
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True, monitor="val_score", filename="{epoch}")
    fit(tmp_path, checkpoint, Scripted([2, 1, 3]), max_epochs=3)
    assert names(tmp_path / "ck") == ["epoch=1.ckpt", "last.ckpt"]
    last = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)
    best = torch.load(tmp_path / "ck" / "epoch=1.ckpt", weights_only=True)
    assert last["global_step"] == best["global_step"] == 4
    assert last["callbacks"] == best["callbacks"]  # the same callback state in both files of a step
    assert checkpoint.last_model_path == str(tmp_path / "ck" / "last.ckpt")


def test_save_last_without_any_top_k_checkpoint_is_written_once_at_the_end(tmp_path: Path) -> None:
    saved: list[str] = []

    class Recording(ModelCheckpoint):
        def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
            saved.append(os.path.basename(filepath))
            super()._save_checkpoint(trainer, filepath)

    checkpoint = Recording(dirpath=tmp_path / "ck", save_last=True, save_top_k=0, every_n_epochs=5,
                           save_on_train_epoch_end=True)
    fit(tmp_path, checkpoint, max_epochs=3)
    assert saved == ["last.ckpt"]
    assert torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)["global_step"] == 6


def test_save_last_without_validation_and_without_train_epoch_end_saving(tmp_path: Path) -> None:
    model = BoringModel()
    model.validation_step = None  # type: ignore[method-assign,assignment]
    model.val_dataloader = None  # type: ignore[method-assign,assignment]
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True, save_on_train_epoch_end=False)
    fit(tmp_path, checkpoint, model, max_epochs=2)
    assert "last.ckpt" in names(tmp_path / "ck")


def test_save_last_link_makes_last_a_relative_symlink_to_the_newest_checkpoint(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", save_last="link", save_top_k=-1, filename="{epoch}")
    fit(tmp_path, checkpoint, max_epochs=2)
    link = tmp_path / "ck" / "last.ckpt"
    assert link.is_symlink() and os.readlink(link) == "epoch=1.ckpt"
    assert torch.load(link, weights_only=True)["global_step"] == 4


def test_save_weights_only_writes_no_optimizer_or_callback_state(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", save_weights_only=True)
    fit(tmp_path, checkpoint)
    saved = torch.load(checkpoint.best_model_path, weights_only=True)
    assert "state_dict" in saved and "optimizer_states" not in saved and "callbacks" not in saved


def test_every_n_train_steps_saves_every_n_optimizer_steps(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=2, save_top_k=-1, filename="{step}")
    fit(tmp_path, checkpoint, limit_train_batches=5)
    assert names(tmp_path / "ck") == ["step=2.ckpt", "step=4.ckpt"]


def test_every_n_epochs_saves_every_n_epochs(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_epochs=2, save_top_k=-1, filename="{epoch}")
    fit(tmp_path, checkpoint, max_epochs=4)
    assert names(tmp_path / "ck") == ["epoch=1.ckpt", "epoch=3.ckpt"]


def test_train_time_interval_saves_once_the_interval_has_passed(tmp_path: Path) -> None:
    due = ModelCheckpoint(dirpath=tmp_path / "due", train_time_interval=timedelta(milliseconds=1), save_top_k=-1,
                          filename="{step}")
    fit(tmp_path, due, Scripted(sleep=0.01), limit_train_batches=3)
    assert names(tmp_path / "due") == ["step=1.ckpt", "step=2.ckpt", "step=3.ckpt"]
    not_due = ModelCheckpoint(dirpath=tmp_path / "not-due", train_time_interval=timedelta(hours=1), save_top_k=-1)
    fit(tmp_path, not_due, limit_train_batches=3)
    assert not (tmp_path / "not-due").exists()


@pytest.mark.parametrize(("save_on_train_epoch_end", "expected"), [
    (None, ["step=2.ckpt", "step=4.ckpt"]),  # two validations per epoch: save after each
    (True, ["step=4.ckpt"]),
])
def test_save_on_train_epoch_end_chooses_between_epoch_end_and_each_validation(
        tmp_path: Path, save_on_train_epoch_end: bool | None, expected: list[str]) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", save_top_k=-1, filename="{step}",
                                 save_on_train_epoch_end=save_on_train_epoch_end)
    fit(tmp_path, checkpoint, limit_train_batches=4, val_check_interval=0.5)
    assert names(tmp_path / "ck") == expected


@pytest.mark.parametrize(("enable", "expected"), [(True, ["epoch=0.ckpt", "epoch=0-v1.ckpt"]), (False, ["epoch=0.ckpt"])])
def test_enable_version_counter_versions_or_overwrites_an_existing_name(tmp_path: Path, enable: bool,
                                                                       expected: list[str]) -> None:
    for _ in range(2):
        fit(tmp_path, ModelCheckpoint(dirpath=tmp_path / "ck", filename="{epoch}", enable_version_counter=enable))
    assert sorted(names(tmp_path / "ck")) == sorted(expected)


def test_to_yaml_writes_the_top_k_paths_and_scores(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_score", save_top_k=2, filename="{epoch}")
    fit(tmp_path, checkpoint, Scripted([3, 1, 2]), max_epochs=3)
    checkpoint.to_yaml()
    with open(tmp_path / "ck" / "best_k_models.yaml") as f:
        assert yaml.safe_load(f) == {str(tmp_path / "ck" / "epoch=1.ckpt"): 1.0,
                                     str(tmp_path / "ck" / "epoch=2.ckpt"): 2.0}


def test_top_k_bookkeeping_survives_a_resume(tmp_path: Path) -> None:
    scores = [5, 3, 4, 1]
    first = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_score", save_top_k=2, save_last=True,
                            filename="{epoch}")
    fit(tmp_path, first, Scripted(scores), max_epochs=2)
    resumed = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_score", save_top_k=2, save_last=True,
                              filename="{epoch}")
    trainer = pl.Trainer(max_epochs=4, limit_train_batches=2, limit_val_batches=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[resumed])
    trainer.fit(Scripted(scores), ckpt_path="last")
    assert names(tmp_path / "ck") == ["epoch=1.ckpt", "epoch=3.ckpt", "last.ckpt"]
    assert sorted(os.path.basename(p) for p in resumed.best_k_models) == ["epoch=1.ckpt", "epoch=3.ckpt"]


def test_a_monitor_never_logged_raises_after_validation_listing_the_logged_metrics(tmp_path: Path) -> None:
    with pytest.raises(MisconfigurationException, match=r"monitor='val_los'.*\['epoch', 'step', 'val_score'\]"):
        fit(tmp_path, ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_los"))


def test_a_monitor_missing_before_any_validation_only_warns(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_score", every_n_train_steps=1)
    with pytest.warns(UserWarning, match="could not find the monitored key"):
        fit(tmp_path, checkpoint, limit_val_batches=0)
    assert not (tmp_path / "ck").exists() or names(tmp_path / "ck") == []


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"save_top_k": -2}, "save_top_k=-2. Must be >= -1"),
    ({"every_n_train_steps": -1}, "every_n_train_steps=-1"),
    ({"every_n_epochs": -1}, "every_n_epochs=-1"),
    ({"every_n_train_steps": 1, "every_n_epochs": 1}, "should be mutually exclusive"),
    ({"save_top_k": 3}, "No quantity for top_k to track"),
    ({"mode": "avg"}, "`mode` can be min, max but got avg"),
    ({"save_last": "yes"}, "use True, False or 'link'"),
])
def test_invalid_arguments_raise_naming_them(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(MisconfigurationException, match=message.replace("(", r"\(").replace(")", r"\)")):
        ModelCheckpoint(**kwargs)


def test_state_key_tells_apart_checkpoints_with_different_triggers() -> None:
    keys = {ModelCheckpoint(monitor="a").state_key, ModelCheckpoint(monitor="a", mode="max").state_key,
            ModelCheckpoint(every_n_train_steps=5).state_key}
    assert len(keys) == 3
    assert ModelCheckpoint(monitor="a").state_key == (
        "ModelCheckpoint{'monitor': 'a', 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 1,"
        " 'train_time_interval': None}")


def test_checkpoints_go_to_an_fsspec_url_and_resume_from_last_there(tmp_path: Path) -> None:
    import fsspec

    url = "memory://model-checkpoint-test/run"
    fit(tmp_path, ModelCheckpoint(dirpath=url, save_last=True, filename="{epoch}"), max_epochs=2)
    fs = fsspec.filesystem("memory")
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(url, detail=False)) == ["epoch=1.ckpt", "last.ckpt"]
    trainer = pl.Trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[ModelCheckpoint(dirpath=url, save_last=True, filename="{epoch}")])
    trainer.fit(Scripted(), ckpt_path="last")
    assert trainer.ckpt_path == f"{url}/last.ckpt" and trainer.global_step == 6


def test_save_last_annotation_is_a_type_a_cli_parser_can_use() -> None:
    import inspect

    from jsonargparse import ArgumentParser

    annotation = inspect.signature(ModelCheckpoint).parameters["save_last"].annotation
    assert not isinstance(annotation, str)
    parser = ArgumentParser()
    parser.add_argument("--save_last", type=annotation)
    for given, parsed in (("true", True), ("no", False), ("link", "link")):
        assert parser.parse_args(["--save_last", given]).save_last == parsed


def _linking_trainer(tmp_path: Path) -> pl.Trainer:
    trainer = pl.Trainer(default_root_dir=str(tmp_path), logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.strategy.connect(BoringModel())
    return trainer


def test_link_replaces_an_empty_or_sharded_directory_but_never_a_foreign_one(tmp_path: Path) -> None:
    trainer = _linking_trainer(tmp_path)
    target = tmp_path / "epoch=0.ckpt"
    target.mkdir()
    (target / "meta.pt").write_bytes(b"shard")

    empty = tmp_path / "last.ckpt"
    empty.mkdir()
    ModelCheckpoint._link_checkpoint(trainer, str(target), str(empty))
    assert empty.is_symlink() and os.readlink(empty) == "epoch=0.ckpt"

    sharded = tmp_path / "last-v1.ckpt"
    sharded.mkdir()
    (sharded / "meta.pt").write_bytes(b"an older sharded last")
    ModelCheckpoint._link_checkpoint(trainer, str(target), str(sharded))
    assert sharded.is_symlink() and os.path.realpath(sharded) == str(target)

    foreign = tmp_path / "last-v2.ckpt"
    (foreign / "notes").mkdir(parents=True)
    (foreign / "notes" / "data.txt").write_text("precious")
    with pytest.raises(IsADirectoryError, match="left untouched"):
        ModelCheckpoint._link_checkpoint(trainer, str(target), str(foreign))
    assert (foreign / "notes" / "data.txt").read_text() == "precious"


def test_link_falls_back_to_an_atomic_copy_where_symlinks_fail(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = _linking_trainer(tmp_path)
    target = tmp_path / "epoch=0.ckpt"
    target.write_bytes(b"weights")

    def no_symlinks(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(1, "symlinks need a privilege here")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    ModelCheckpoint._link_checkpoint(trainer, str(target), str(tmp_path / "last.ckpt"))
    assert not (tmp_path / "last.ckpt").is_symlink()
    assert (tmp_path / "last.ckpt").read_bytes() == b"weights"
    assert names(tmp_path) == ["epoch=0.ckpt", "last.ckpt"]  # no temporary file left behind


def test_saving_with_a_module_attached_to_the_strategy_before_any_run(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = pl.Trainer(callbacks=[checkpoint], logger=False, enable_progress_bar=False)
    trainer.strategy.connect(BoringModel())
    checkpoint._save_last_checkpoint(trainer, {"loss": torch.tensor(1.0)})
    assert names(tmp_path) == ["last.ckpt"]
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert state["global_step"] == 0
    assert state["callbacks"][checkpoint.state_key]["last_model_path"] == str(tmp_path / "last.ckpt")


def test_a_step_save_monitoring_a_validation_metric_waits_for_the_validation_after_it(tmp_path: Path) -> None:
    # the step that ends each epoch is due; validation follows it: the save is scored with the fresh value
    # (as in Lightning 2.6), not skipped in the first epoch nor scored with the last epoch's value
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_score", mode="max", save_top_k=-1,
                                 every_n_train_steps=2, filename="{step}-{val_score:.1f}",
                                 save_on_train_epoch_end=False)
    fit(tmp_path, checkpoint, Scripted(scores=[1.0, 3.0, 2.0]), max_epochs=3)
    assert names(tmp_path / "ck") == ["step=2-val_score=1.0.ckpt", "step=4-val_score=3.0.ckpt",
                                      "step=6-val_score=2.0.ckpt"]
    assert float(checkpoint.best_model_score) == 3.0


def test_a_step_save_monitoring_a_training_metric_saves_at_that_step(tmp_path: Path) -> None:
    class CountsSteps(Scripted):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.log("steps_done", float(self.global_step + 1))
            return super().training_step(batch, batch_idx)

    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="steps_done", mode="max", save_top_k=1,
                                 every_n_train_steps=1, save_on_train_epoch_end=False)
    fit(tmp_path, checkpoint, CountsSteps(), max_epochs=2, limit_val_batches=0)
    assert float(checkpoint.best_model_score) == 4.0  # the value of the step the save happened at
