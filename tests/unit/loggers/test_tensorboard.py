"""TensorBoardLogger: what lands in the event files and beside them, read back with tensorboard's reader."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
import yaml

from torchbolt import Trainer
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.loggers import CSVLogger, TensorBoardLogger


class LoggingModel(BoringModel):
    def __init__(self, lr: float = 0.1, layers: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters()

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.log("train_loss", out["loss"])
        return out

    def validation_step(self, batch, batch_idx):
        out = super().validation_step(batch, batch_idx)
        self.log("val_loss", out["x"])
        return out


def _trainer(tmp_path: Path, **kwargs) -> Trainer:
    defaults = dict(default_root_dir=tmp_path, max_epochs=1, limit_train_batches=4, limit_val_batches=2,
                    log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
                    enable_checkpointing=False)
    defaults.update(kwargs)
    return Trainer(**defaults)


def test_default_logger_is_tensorboard_writing_lightning_logs_version_0(tmp_path):
    trainer = _trainer(tmp_path)
    assert isinstance(trainer.logger, TensorBoardLogger)
    trainer.fit(LoggingModel())
    expected = os.path.join(str(tmp_path), "lightning_logs", "version_0")
    assert trainer.log_dir == expected
    files = os.listdir(expected)
    assert "hparams.yaml" in files
    assert any(f.startswith("events.out.tfevents.") for f in files)


def test_versions_increment_across_runs(tmp_path):
    dirs = []
    for _ in range(3):
        trainer = _trainer(tmp_path)
        trainer.fit(LoggingModel())
        dirs.append(os.path.basename(trainer.log_dir))
    assert dirs == ["version_0", "version_1", "version_2"]


def test_scalars_are_written_at_the_trainer_step(tmp_path, tb_scalars):
    trainer = _trainer(tmp_path, max_epochs=2, log_every_n_steps=2)
    trainer.fit(LoggingModel())
    scalars = tb_scalars(trainer.log_dir)
    assert [s for s, _ in scalars["train_loss"]] == [1, 3, 5, 7]
    # validation runs at each epoch end, at the step of the epoch's last batch
    assert [s for s, _ in scalars["val_loss"]] == [3, 7]
    assert {s: v for s, v in scalars["epoch"]} == {1: 0.0, 3: 0.0, 5: 1.0, 7: 1.0}


def test_logged_values_match_callback_metrics(tmp_path, tb_scalars):
    trainer = _trainer(tmp_path)
    trainer.fit(LoggingModel())
    scalars = tb_scalars(trainer.log_dir)
    assert scalars["val_loss"][-1][1] == pytest.approx(trainer.callback_metrics["val_loss"].item())
    assert scalars["train_loss"][-1][1] == pytest.approx(trainer.callback_metrics["train_loss"].item())


def test_hparams_reach_the_hparams_tab_and_yaml(tmp_path, tb_hparams, tb_scalars):
    trainer = _trainer(tmp_path)
    trainer.fit(LoggingModel(lr=0.05, layers=3))
    assert tb_hparams(trainer.log_dir) == {"lr": 0.05, "layers": 3.0}
    assert tb_scalars(trainer.log_dir)["hp_metric"] == [(0, -1.0)]
    with open(os.path.join(trainer.log_dir, "hparams.yaml")) as f:
        assert yaml.safe_load(f) == {"lr": 0.05, "layers": 3}


def test_log_hyperparams_writes_its_metrics_at_the_given_step(tmp_path, tb_scalars):
    logger = TensorBoardLogger(tmp_path)
    logger.log_hyperparams({"lr": 0.1}, {"hp_metric": 0.5}, step=7)
    logger.save()
    assert tb_scalars(logger.log_dir)["hp_metric"] == [(7, 0.5)]


def test_default_hp_metric_false_writes_no_placeholder(tmp_path, tb_scalars):
    logger = TensorBoardLogger(tmp_path, default_hp_metric=False)
    trainer = _trainer(tmp_path, logger=logger)
    trainer.fit(LoggingModel())
    assert "hp_metric" not in tb_scalars(logger.log_dir)


def test_hp_metric_logged_by_the_module_replaces_the_placeholder(tmp_path, tb_scalars):
    class Model(LoggingModel):
        def on_validation_epoch_end(self):
            self.log("hp_metric", 0.25)

    trainer = _trainer(tmp_path)
    trainer.fit(Model())
    values = tb_scalars(trainer.log_dir)["hp_metric"]
    assert values[0] == (0, -1.0)
    assert values[-1] == (3, 0.25)


def test_log_hyperparams_with_explicit_metrics(tmp_path, tb_hparams, tb_scalars):
    logger = TensorBoardLogger(tmp_path)
    logger.log_hyperparams({"opt": {"name": "adam", "betas": (0.9, 0.99)}, "obj": object}, metrics={"acc": 0.5})
    logger.finalize("success")
    hparams = tb_hparams(logger.log_dir)
    assert hparams["opt/name"] == "adam"
    assert hparams["opt/betas"] == "(0.9, 0.99)"  # not a TensorBoard type: written as text
    assert tb_scalars(logger.log_dir)["acc"] == [(0, 0.5)]


def test_log_graph_traces_example_input_array(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = LoggingModel()
    model.example_input_array = torch.randn(2, 32)
    logger = TensorBoardLogger(tmp_path, log_graph=True)
    _trainer(tmp_path, logger=logger).fit(model)
    acc = EventAccumulator(logger.log_dir)
    acc.Reload()
    assert acc.Tags()["graph"] is True
    assert any("Linear" in node.name or "layer" in node.name for node in acc.Graph().node)


def test_log_graph_without_example_input_warns(tmp_path):
    logger = TensorBoardLogger(tmp_path, log_graph=True)
    with pytest.warns(UserWarning, match="example_input_array"):
        _trainer(tmp_path, logger=logger).fit(LoggingModel())


def test_version_name_and_sub_dir_pin_the_directory(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="exp", version="run_a", sub_dir="train")
    trainer = _trainer(tmp_path, logger=logger)
    trainer.fit(LoggingModel())
    expected = os.path.join(str(tmp_path), "exp", "run_a", "train")
    assert logger.log_dir == trainer.log_dir == expected
    assert any(f.startswith("events.out") for f in os.listdir(expected))


def test_default_checkpoint_dir_is_under_the_version_dir(tmp_path):
    pytest.importorskip("torchbolt.callbacks.model_checkpoint", reason="ModelCheckpoint is not in this build yet")
    trainer = _trainer(tmp_path, enable_checkpointing=True)
    trainer.fit(LoggingModel())
    checkpoint_dir = trainer.checkpoint_callback.dirpath
    assert checkpoint_dir == os.path.join(trainer.log_dir, "checkpoints")
    assert os.listdir(checkpoint_dir)


def test_int_version_and_empty_name(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="", version=7)
    assert logger.root_dir == os.path.join(str(tmp_path), "")
    assert logger.log_dir == os.path.join(str(tmp_path), "version_7")


def test_next_version_skips_files_and_non_numeric_dirs(tmp_path):
    root = tmp_path / "lightning_logs"
    (root / "version_3").mkdir(parents=True)
    (root / "version_x").mkdir()
    (root / "version_9").write_text("a file, not a run")
    assert TensorBoardLogger(tmp_path).version == 4


def test_prefix_is_joined_with_a_dash(tmp_path, tb_scalars):
    logger = TensorBoardLogger(tmp_path, prefix="exp")
    logger.log_metrics({"loss": torch.tensor(0.5)}, step=3)
    logger.finalize("success")
    assert tb_scalars(logger.log_dir) == {"exp-loss": [(3, 0.5)]}


def test_unloggable_value_raises_value_error(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    with pytest.raises(ValueError, match="cannot log bad="):
        logger.log_metrics({"bad": "text"}, step=0)


def test_dict_value_becomes_a_group_of_scalars(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"losses": {"a": 1.0, "b": 2.0}}, step=1)
    logger.finalize("success")
    # add_scalars writes one sub-run directory per key, as TensorBoard expects
    assert sorted(os.listdir(logger.log_dir)).count("losses_a") == 1


def test_tensorboard_and_csv_loggers_together(tmp_path, tb_scalars):
    import csv

    tb = TensorBoardLogger(tmp_path, name="tb")
    csv_logger = CSVLogger(tmp_path, name="csv")
    trainer = _trainer(tmp_path, logger=[tb, csv_logger])
    trainer.fit(LoggingModel())
    assert trainer.log_dir == tb.log_dir
    assert trainer.loggers == [tb, csv_logger]
    tb_steps = [s for s, _ in tb_scalars(tb.log_dir)["train_loss"]]
    with open(os.path.join(csv_logger.log_dir, "metrics.csv")) as f:
        csv_steps = [int(r["step"]) for r in csv.DictReader(f) if r["train_loss"]]
    assert tb_steps == csv_steps == [0, 1, 2, 3]


def test_logger_false_writes_nothing(tmp_path):
    trainer = _trainer(tmp_path, logger=False)
    trainer.fit(LoggingModel())
    assert trainer.logger is None
    assert trainer.log_dir == str(tmp_path)
    assert not (tmp_path / "lightning_logs").exists()


def test_unwritable_save_dir_fails_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    steps = []

    class Model(LoggingModel):
        def training_step(self, batch, batch_idx):
            steps.append(batch_idx)
            return super().training_step(batch, batch_idx)

    trainer = _trainer(tmp_path, logger=TensorBoardLogger(blocker / "logs"))
    with pytest.raises((NotADirectoryError, FileExistsError, OSError)):
        trainer.fit(Model())
    assert steps == []


def test_logger_pickles_without_its_writer(tmp_path):
    import pickle

    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"a": 1.0}, step=0)
    clone = pickle.loads(pickle.dumps(logger))
    assert clone._experiment is None
    assert clone.log_dir == logger.log_dir
    logger.finalize("success")


def test_log_graph_of_a_model_outside_any_trainer(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, log_graph=True)
    logger.log_graph(BoringModel(), torch.randn(2, 32))  # tracing must not trip over `model.trainer`
    logger.finalize("success")
    acc = EventAccumulator(logger.log_dir)
    acc.Reload()
    assert acc.Tags()["graph"] is True


def test_name_and_version_overridden_by_a_subclass_shape_the_log_dir(tmp_path):
    class FixedLayout(TensorBoardLogger):
        @property
        def name(self) -> str:
            return "fixed"

        @property
        def version(self) -> str:
            return "v"

    assert FixedLayout(tmp_path).log_dir == os.path.join(str(tmp_path), "fixed", "v")
    assert FixedLayout(tmp_path, sub_dir="s").log_dir == os.path.join(str(tmp_path), "fixed", "v", "s")


def _summary_events(log_dir: str) -> list:
    """Every event with a summary in the directory's event files, in order (tensorboard's raw reader)."""
    import glob

    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    events = []
    for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        events += [e for e in EventFileLoader(path).Load() if e.HasField("summary")]
    return events


def test_one_log_metrics_call_is_one_event_with_every_scalar(tmp_path, tb_scalars):
    # the Trainer's flush every `log_every_n_steps` wakes the event writer once, not once per value
    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"loss": torch.tensor(0.25), "acc": 0.5, "epoch": 2, "flag": True}, step=7)
    logger.log_metrics({"loss": 0.125}, step=8)
    logger.finalize("success")
    events = _summary_events(logger.log_dir)
    assert [(e.step, [v.tag for v in e.summary.value]) for e in events] == [
        (7, ["loss", "acc", "epoch", "flag"]), (8, ["loss"])]
    # read back exactly as values written one by one with `add_scalar`
    assert tb_scalars(logger.log_dir) == {"loss": [(7, 0.25), (8, 0.125)], "acc": [(7, 0.5)], "epoch": [(7, 2.0)],
                                          "flag": [(7, 1.0)]}


def test_a_patched_add_scalar_still_receives_every_value(tmp_path):
    # code that wraps the writer's `add_scalar` (to mirror values elsewhere, say) keeps seeing each one
    logger = TensorBoardLogger(tmp_path)
    seen = []
    original = logger.experiment.add_scalar
    logger.experiment.add_scalar = lambda tag, value, step=None: (seen.append((tag, value, step)),
                                                                   original(tag, value, step))
    logger.log_metrics({"a": torch.tensor(1.5), "b": 2.0}, step=3)
    assert seen == [("a", 1.5, 3), ("b", 2.0, 3)]


def test_a_trainer_run_writes_one_event_per_flush(tmp_path, tb_scalars):
    class TwoValues(LoggingModel):
        def training_step(self, batch, batch_idx):
            out = super().training_step(batch, batch_idx)
            self.log("other", 2.0 * batch_idx)
            return out

    trainer = _trainer(tmp_path, log_every_n_steps=2, limit_val_batches=0)
    trainer.fit(TwoValues())
    steps = [(e.step, sorted(v.tag for v in e.summary.value)) for e in _summary_events(trainer.logger.log_dir)
             if any(v.tag == "train_loss" for v in e.summary.value)]
    assert steps == [(1, ["epoch", "other", "train_loss"]), (3, ["epoch", "other", "train_loss"])]
    assert tb_scalars(trainer.logger.log_dir)["other"] == [(1, 2.0), (3, 6.0)]


def test_scalars_reach_the_writer_before_anything_done_with_experiment(tmp_path, tb_scalars):
    # the scalars of `log_metrics` wait for the next save; whatever is done with `logger.experiment` first
    # (a flush, an image, closing it) comes after them, with each value at the step and time it was logged
    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"loss": 1.0}, step=0)
    time.sleep(0.05)
    logger.log_metrics({"loss": 0.5}, step=1)
    logger.experiment.flush()
    assert tb_scalars(logger.log_dir) == {"loss": [(0, 1.0), (1, 0.5)]}
    first, second = _summary_events(logger.log_dir)
    assert second.wall_time - first.wall_time >= 0.04


def test_kept_scalar_events_are_bounded(tmp_path, tb_scalars):
    logger = TensorBoardLogger(tmp_path)
    writer = logger.experiment
    for step in range(150):
        logger.log_metrics({"x": float(step)}, step=step)
    writer.flush()  # the writer itself, not through `experiment`: only what was handed over is written
    written = tb_scalars(logger.log_dir)["x"]
    assert 100 <= len(written) < 150 and written[:3] == [(0, 0.0), (1, 1.0), (2, 2.0)]
    logger.finalize("success")
    assert len(tb_scalars(logger.log_dir)["x"]) == 150


def test_a_pickled_logger_leaves_its_scalars_in_its_own_file(tmp_path, tb_scalars):
    import pickle

    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"loss": 2.0}, step=4)
    copy = pickle.loads(pickle.dumps(logger))
    assert copy._pending == []
    logger.finalize("success")
    assert tb_scalars(logger.log_dir) == {"loss": [(4, 2.0)]}


def test_the_trainer_s_flushes_do_not_wake_the_writer_between_saves(tmp_path, tb_scalars):
    # every `log_every_n_steps` the Trainer calls `log_metrics`; the events reach the writer's thread at
    # the logger's saves (every few seconds, epoch ends, checkpoints), not at each call
    handed: list[int] = []

    class Watching(LoggingModel):
        def on_train_start(self) -> None:
            file_writer = self.logger.experiment._get_file_writer()
            add_event = file_writer.add_event

            def recording(event, *args, **kwargs):
                if event.HasField("summary") and any(v.tag == "train_loss" for v in event.summary.value):
                    handed.append(self.trainer.global_step)
                return add_event(event, *args, **kwargs)

            file_writer.add_event = recording

    trainer = _trainer(tmp_path, limit_train_batches=20, limit_val_batches=0, log_every_n_steps=2)
    trainer.fit(Watching())
    # the first call is saved at once (the files appear early); the others wait for the epoch's end
    assert handed == [2] + [20] * 9
    assert [step for step, _ in tb_scalars(trainer.logger.log_dir)["train_loss"]] == list(range(1, 20, 2))
