"""Resuming from a checkpoint written at any point of a fit ends bit-identical to the uninterrupted fit."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch
from _resume_workload import AugmentedData, ResumeModel, first_difference, fit, make_trainer, seed, weights
from torch.utils.data import default_collate

from torchbolt.callbacks import Callback, LambdaCallback, ModelCheckpoint
from torchbolt.loggers import CSVLogger
from torchbolt.utilities.cloud_io import _load


class SaveEveryBatch(Callback):
    """Writes a checkpoint after every training batch, also inside accumulation windows."""

    def __init__(self, dirpath: Path) -> None:
        self.dirpath = dirpath
        self.paths: list[str] = []

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        path = str(self.dirpath / f"batch-{len(self.paths)}.ckpt")
        trainer.save_checkpoint(path)
        self.paths.append(path)


@pytest.mark.parametrize(("accumulate", "val_check_interval"), [(1, 1.0), (3, 0.5)])
def test_resume_after_any_batch_is_bit_exact(tmp_path: Path, accumulate: int, val_check_interval: float) -> None:
    options = {"max_epochs": 2, "accumulate_grad_batches": accumulate, "val_check_interval": val_check_interval}
    saver = SaveEveryBatch(tmp_path)
    expected, reference = fit({}, options, [saver])
    assert len(saver.paths) == 16
    for path in saver.paths:
        got, resumed = fit({}, options, ckpt_path=path)
        assert first_difference(expected, got) is None, path
        assert (resumed.global_step, resumed.current_epoch) == (reference.global_step, reference.current_epoch)


@pytest.mark.parametrize("hook", ["on_train_epoch_start", "on_train_epoch_end", "on_validation_end"])
def test_resume_from_checkpoints_written_in_epoch_and_validation_hooks_is_bit_exact(tmp_path: Path, hook: str
                                                                                    ) -> None:
    paths: list[str] = []

    def save(trainer: Any, *args: Any) -> None:
        if not trainer.sanity_checking:
            paths.append(str(tmp_path / f"{hook}-{len(paths)}.ckpt"))
            trainer.save_checkpoint(paths[-1])

    options = {"max_epochs": 2, "val_check_interval": 0.5, "accumulate_grad_batches": 3}
    expected, _ = fit({}, options, [LambdaCallback(**{hook: save})])
    assert len(paths) >= 2
    for path in paths:
        got, _ = fit({}, options, ckpt_path=path)
        assert first_difference(expected, got) is None, path


def test_checkpoint_inside_an_accumulation_window_carries_the_accumulated_gradients(tmp_path: Path) -> None:
    saver = SaveEveryBatch(tmp_path)
    fit({}, {"max_epochs": 1, "accumulate_grad_batches": 3}, [saver])
    grads = [_load(p)["loops"]["fit_loop"]["torchbolt"]["grads"] for p in saver.paths]
    # after batches 1, 2 (window open) gradients are saved; after batch 3 (optimizer stepped) not
    assert [bool(g) for g in grads[:3]] == [True, True, False]
    assert set(grads[0]) == {"net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias"}


def test_resume_with_two_dataloader_workers_is_bit_exact(tmp_path: Path) -> None:
    options = {"max_epochs": 2}
    saver = SaveEveryBatch(tmp_path)
    expected, _ = fit({"workers": 2}, options, [saver])
    for index in (2, 7, 12):  # mid-epoch 0, end of epoch 0, mid-epoch 1
        got, _ = fit({"workers": 2}, options, ckpt_path=saver.paths[index])
        assert first_difference(expected, got) is None, saver.paths[index]


def test_resume_from_checkpoints_modelcheckpoint_writes_after_validation_is_exact(tmp_path: Path) -> None:
    options = {"max_epochs": 2, "val_check_interval": 0.5}
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "run", monitor="val_loss", save_top_k=-1)
    expected, _ = fit({}, options, [checkpoint])
    saved = sorted(checkpoint.best_k_models)
    assert len(saved) == 4  # two validations per epoch
    for i, path in enumerate(saved):
        resumed_checkpoint = ModelCheckpoint(dirpath=tmp_path / f"resumed-{i}", monitor="val_loss", save_top_k=-1)
        got, _ = fit({}, options, [resumed_checkpoint], ckpt_path=path)
        assert first_difference(expected, got) is None, path


def test_resume_restores_epoch_aggregates_and_callback_metrics(tmp_path: Path) -> None:
    saver = SaveEveryBatch(tmp_path)
    _, reference = fit({}, {"max_epochs": 1}, [saver])
    _, resumed = fit({}, {"max_epochs": 1}, ckpt_path=saver.paths[4])  # mid-epoch: 4 of 8 batches left
    assert reference.callback_metrics.keys() == resumed.callback_metrics.keys()
    for key, value in reference.callback_metrics.items():
        assert torch.equal(value, resumed.callback_metrics[key]), key


def test_resume_continues_the_logger_step_and_rows(tmp_path: Path) -> None:
    def run(logger_dir: Path, callbacks: list[Any], ckpt_path: str | None = None) -> list[dict[str, str]]:
        seed()
        model = ResumeModel()
        trainer = make_trainer(callbacks, max_epochs=2, logger=CSVLogger(logger_dir, name="", version=0),
                               log_every_n_steps=2)
        trainer.fit(model, ckpt_path=ckpt_path)
        with open(logger_dir / "version_0" / "metrics.csv") as f:
            return list(csv.DictReader(f))

    saver = SaveEveryBatch(tmp_path / "ckpts")
    full = run(tmp_path / "full", [saver])
    resumed = run(tmp_path / "resumed", [], ckpt_path=saver.paths[5])
    assert resumed and resumed == full[-len(resumed):]


class CountingStatefulLoader:
    """A loader with its own ``state_dict``/``load_state_dict`` (like a stateful dataloader)."""

    def __init__(self, batch_size: int = 4) -> None:
        self.dataset = AugmentedData()
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(3)
        self.order: list[int] = []
        self.yielded = 0
        self.fetched = 0
        self._restored = False

    def __len__(self) -> int:
        return len(self.dataset) // self.batch_size

    def __iter__(self) -> Any:
        if not self._restored or self.yielded >= len(self):
            self.order = torch.randperm(len(self.dataset), generator=self.generator).tolist()
            self.yielded = 0
        self._restored = False
        while self.yielded < len(self):
            start = self.yielded * self.batch_size
            self.yielded += 1
            self.fetched += 1
            yield default_collate([self.dataset[i] for i in self.order[start:start + self.batch_size]])

    def state_dict(self) -> dict[str, Any]:
        return {"order": list(self.order), "yielded": self.yielded, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order, self.yielded = list(state["order"]), state["yielded"]
        self.generator.set_state(state["generator"])
        self._restored = True


class StatefulLoaderModel(ResumeModel):
    def train_dataloader(self) -> Any:
        self.loader = CountingStatefulLoader()
        return self.loader


def test_resume_positions_a_stateful_loader_with_its_own_state(tmp_path: Path) -> None:
    def run(callbacks: list[Any], ckpt_path: str | None = None) -> tuple[dict[str, torch.Tensor], int]:
        seed()
        model = StatefulLoaderModel()
        make_trainer(callbacks, max_epochs=2).fit(model, ckpt_path=ckpt_path)
        return weights(model), model.loader.fetched

    saver = SaveEveryBatch(tmp_path)
    expected, fetched_full = run([saver])
    got, fetched_resumed = run([], ckpt_path=saver.paths[5])
    assert first_difference(expected, got) is None
    assert fetched_resumed == fetched_full - 6  # the loader skipped ahead itself: no batch fetched twice


class ManualAccumulationModel(ResumeModel):
    """Manual optimization stepping every second batch: gradients live across batches."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        optimizer = self.optimizers()
        loss = torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])
        self.manual_backward(loss)
        if batch_idx % 2 == 1:
            optimizer.step()
            optimizer.zero_grad()
        return loss


def test_resume_under_manual_optimization_keeps_gradients_between_steps(tmp_path: Path) -> None:
    def run(callbacks: list[Any], ckpt_path: str | None = None) -> dict[str, torch.Tensor]:
        seed()
        model = ManualAccumulationModel()
        make_trainer(callbacks, max_epochs=1).fit(model, ckpt_path=ckpt_path)
        return weights(model)

    saver = SaveEveryBatch(tmp_path)
    expected = run([saver])
    for path in saver.paths[:4]:
        assert first_difference(expected, run([], ckpt_path=path)) is None, path
