"""Resuming from a checkpoint written at any point of a fit ends bit-identical to the uninterrupted fit."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch
from _resume_workload import AugmentedData, ResumeModel, first_difference, fit, make_trainer, seed, weights
from torch.utils.data import DataLoader, default_collate

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


# ---------------------------------------------------------------------- torchmetrics metrics


class MetricModel(ResumeModel):
    """Logs ``Metric`` objects on epoch (training and validation) and keeps one it computes and resets itself."""

    def __init__(self) -> None:
        super().__init__()
        torchmetrics = pytest.importorskip("torchmetrics")
        self.train_mean = torchmetrics.MeanMetric()
        self.train_acc = torchmetrics.classification.MulticlassAccuracy(num_classes=2, average="micro")
        self.val_acc = torchmetrics.classification.MulticlassAccuracy(num_classes=2, average="micro")
        self.self_managed = torchmetrics.SumMetric()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        self.train_mean.update(loss.detach() * 7)
        self.train_acc(logits.argmax(1), y)
        self.self_managed.update(logits.detach().sum())
        self.log("mean_epoch", self.train_mean, on_step=False, on_epoch=True)
        self.log("acc", self.train_acc, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.val_acc.update(self.net(x).argmax(1), y)
        self.log("val_acc", self.val_acc)

    def on_train_epoch_end(self) -> None:
        self.log("self_managed", self.self_managed.compute())
        self.self_managed.reset()


def test_resume_restores_torchmetrics_state_so_epoch_values_match(tmp_path: Path) -> None:
    def run(callbacks: list[Any], ckpt_path: str | None = None) -> tuple[dict[str, torch.Tensor], Any]:
        seed()
        model = MetricModel()
        history = EpochMetrics()
        make_trainer([*callbacks, history], max_epochs=2, val_check_interval=0.5).fit(model, ckpt_path=ckpt_path)
        return weights(model), history

    saver = SaveEveryBatch(tmp_path)
    expected, full = run([saver])
    assert {"mean_epoch", "acc_epoch", "val_acc", "self_managed"} <= set(full.epochs[0])
    for path in saver.paths:
        got, resumed = run([], ckpt_path=path)
        assert first_difference(expected, got) is None, path
        # the epochs the resumed run finished report what the uninterrupted run reported, bit for bit
        assert resumed.epochs == full.epochs[-len(resumed.epochs):], path
        assert resumed.validations == full.validations[-len(resumed.validations):], path


class EpochMetrics(Callback):
    """Every finished training epoch's and every validation's callback metrics, as Python numbers."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self.validations: list[float] = []

    def _record(self, trainer: Any) -> None:
        # read after every `on_train_epoch_end` (the module's included) ran
        self.epochs.append({k: v.item() for k, v in trainer.callback_metrics.items() if not k.endswith("_step")})

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.current_epoch > 0:
            self._record(trainer)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._record(trainer)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.validations.append(trainer.callback_metrics["val_acc"].item())


# ---------------------------------------------------------------------- loaders that restore their own position


class CountedData(AugmentedData):
    """``AugmentedData`` that counts the samples fetched from it (``num_workers=0``: in this process)."""

    fetched = 0

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        CountedData.fetched += 1
        return super().__getitem__(i)


class StreamData(torch.utils.data.IterableDataset):
    """A stream without a length: every pass yields the points in an order drawn from its own generator.

    ``state_dict``/``load_state_dict`` hold the pass, the position in it and the generator; after
    ``load_state_dict``, iterating continues from the position (or starts the next pass at its end).
    """

    def __init__(self, n: int = 30) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=g)
        self.y = (self.x.sum(1) > 0).long()
        self.generator = torch.Generator().manual_seed(5)
        self.order: list[int] = []
        self.position = 0
        self.fetched = 0
        self._continue = False

    def __iter__(self) -> Any:
        if not self._continue or self.position >= len(self.order):
            self.order = torch.randperm(len(self.x), generator=self.generator).tolist()
            self.position = 0
        self._continue = False
        while self.position < len(self.order):
            i = self.order[self.position]
            self.position += 1
            self.fetched += 1
            yield self.x[i], self.y[i]

    def state_dict(self) -> dict[str, Any]:
        return {"order": list(self.order), "position": self.position, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order, self.position = list(state["order"]), int(state["position"])
        self.generator.set_state(state["generator"])
        self._continue = True


class LoaderModel(ResumeModel):
    """Records every training batch; the training loader comes from ``make_loader``."""

    def __init__(self, make_loader: Any) -> None:
        super().__init__()
        self.make_loader = make_loader
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.seen.append(batch[0].clone())
        return super().training_step(batch, batch_idx)

    def train_dataloader(self) -> Any:
        self.loader = self.make_loader()
        return self.loader


def _fit_loader_model(make_loader: Any, callbacks: list[Any], ckpt_path: str | None = None
                      ) -> tuple[dict[str, torch.Tensor], LoaderModel]:
    seed()
    model = LoaderModel(make_loader)
    make_trainer(callbacks, max_epochs=2).fit(model, ckpt_path=ckpt_path)
    return weights(model), model


def _assert_continues_exactly(full: Any, expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor],
                              resumed: Any, done: int, path: str) -> None:
    """``full`` and ``resumed`` record their training batches in ``seen``."""
    assert first_difference(expected, got) is None, path
    # the batches trained after the resume are exactly the ones the uninterrupted run trained from there on
    assert len(resumed.seen) == len(full.seen) - done, path
    assert all(torch.equal(a, b) for a, b in zip(resumed.seen, full.seen[done:])), path


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_a_torchdata_stateful_dataloader_from_its_own_state(tmp_path: Path, workers: int) -> None:
    stateful_dataloader = pytest.importorskip("torchdata.stateful_dataloader")

    def make_loader() -> Any:
        # workers: a dataset without randomness in __getitem__ (the workers' generators are not restored)
        data = CountedData() if workers == 0 else TensorData()
        return stateful_dataloader.StatefulDataLoader(data, batch_size=4, shuffle=True, num_workers=workers)

    saver = SaveEveryBatch(tmp_path)
    CountedData.fetched = 0
    expected, full = _fit_loader_model(make_loader, [saver])
    fetched_full = CountedData.fetched
    for done in (3, 8, 13):  # mid-epoch 0, end of epoch 0, mid-epoch 1
        CountedData.fetched = 0
        got, resumed = _fit_loader_model(make_loader, [], ckpt_path=saver.paths[done - 1])
        _assert_continues_exactly(full, expected, got, resumed, done, saver.paths[done - 1])
        if workers == 0:  # positioned by its own state: no sample fetched again
            assert CountedData.fetched == fetched_full - 4 * done


class TensorData(torch.utils.data.Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(32, 8, generator=g)
        self.y = (self.x.sum(1) > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def test_resume_continues_an_iterable_dataset_from_its_own_state(tmp_path: Path) -> None:
    datasets: list[StreamData] = []

    def make_loader() -> Any:
        datasets.append(StreamData())
        return DataLoader(datasets[-1], batch_size=4)  # 30 points: 7 full batches and one of 2

    saver = SaveEveryBatch(tmp_path)
    expected, full = _fit_loader_model(make_loader, [saver])
    assert len(saver.paths) == 16
    for done in (1, 3, 7, 8, 12, 15):
        datasets.clear()
        got, resumed = _fit_loader_model(make_loader, [], ckpt_path=saver.paths[done - 1])
        _assert_continues_exactly(full, expected, got, resumed, done, saver.paths[done - 1])
        # positioned by its own state: no point fetched twice (one batch is fetched ahead, for `is_last`)
        assert datasets[-1].fetched == 60 - sum(len(b) for b in full.seen[:done]), saver.paths[done - 1]


class TwoLoaderModel(ResumeModel):
    """Trains on a dict of two ``StatefulDataLoader`` s (a combined loader); records every batch."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.seen.append(torch.cat([batch["a"][0], batch["b"][0]]))
        x = torch.cat([batch["a"][0], batch["b"][0]])
        y = torch.cat([batch["a"][1], batch["b"][1]])
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def train_dataloader(self) -> Any:
        from torchdata.stateful_dataloader import StatefulDataLoader

        return {"a": StatefulDataLoader(AugmentedData(), batch_size=4, shuffle=True),
                "b": StatefulDataLoader(TensorData(), batch_size=4, shuffle=True)}


def test_resume_continues_combined_stateful_loaders_from_their_own_states(tmp_path: Path) -> None:
    pytest.importorskip("torchdata.stateful_dataloader")

    def run(callbacks: list[Any], ckpt_path: str | None = None) -> tuple[dict[str, torch.Tensor], TwoLoaderModel]:
        seed()
        model = TwoLoaderModel()
        make_trainer(callbacks, max_epochs=2).fit(model, ckpt_path=ckpt_path)
        return weights(model), model

    saver = SaveEveryBatch(tmp_path)
    expected, full = run([saver])
    for done in (3, 8, 13):
        got, resumed = run([], ckpt_path=saver.paths[done - 1])
        _assert_continues_exactly(full, expected, got, resumed, done, saver.paths[done - 1])
