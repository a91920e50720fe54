"""Tiny models and data for bug reports and tests (same shapes as Lightning's ``BoringModel``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from torchbolt.core.datamodule import LightningDataModule
from torchbolt.core.module import LightningModule


class RandomDataset(Dataset):
    """``length`` random vectors of ``size`` features (drawn once, at construction)."""

    def __init__(self, size: int, length: int) -> None:
        self.len = length
        self.data = torch.randn(length, size)

    def __getitem__(self, index: int) -> Tensor:
        return self.data[index]

    def __len__(self) -> int:
        return self.len


class RandomDictDataset(RandomDataset):
    """Like :class:`RandomDataset`, each item a dict ``{"a": x, "b": x + 2}``."""

    def __getitem__(self, index: int) -> dict[str, Tensor]:  # type: ignore[override]
        a = self.data[index]
        return {"a": a, "b": a + 2}


class RandomIterableDataset(IterableDataset):
    """``count`` random vectors of ``size`` features, without ``__len__``."""

    def __init__(self, size: int, count: int) -> None:
        self.count = count
        self.size = size

    def __iter__(self) -> Iterator[Tensor]:
        for _ in range(self.count):
            yield torch.randn(self.size)


class RandomIterableDatasetWithLen(RandomIterableDataset):
    def __len__(self) -> int:
        return self.count


class BoringModel(LightningModule):
    """One ``Linear(32, 2)`` layer trained on random data towards ones; every step is overridable.

    Example::

        class MyBug(BoringModel):
            def training_step(self, batch, batch_idx):
                ...  # reproduce the problem here

        Trainer(fast_dev_run=True).fit(MyBug())
    """

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(32, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)

    def loss(self, preds: Tensor, labels: Tensor | None = None) -> Tensor:
        if labels is None:
            labels = torch.ones_like(preds)
        return F.mse_loss(preds, labels)

    def step(self, batch: Any) -> Tensor:
        output = self(batch)
        return self.loss(output)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return {"loss": self.step(batch)}

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return {"x": self.step(batch)}

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return {"y": self.step(batch)}

    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[Any]]:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
        return [optimizer], [lr_scheduler]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(RandomDataset(32, 64))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(RandomDataset(32, 64))

    def test_dataloader(self) -> DataLoader:
        return DataLoader(RandomDataset(32, 64))

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(RandomDataset(32, 64))


class BoringDataModule(LightningDataModule):
    """Random data split into train/val/test/predict subsets of 64 samples each."""

    def __init__(self) -> None:
        super().__init__()
        self.random_full = RandomDataset(32, 64 * 4)

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.random_train = Subset(self.random_full, indices=range(64))
        if stage in ("fit", "validate"):
            self.random_val = Subset(self.random_full, indices=range(64, 64 * 2))
        if stage == "test":
            self.random_test = Subset(self.random_full, indices=range(64 * 2, 64 * 3))
        if stage == "predict":
            self.random_predict = Subset(self.random_full, indices=range(64 * 3, 64 * 4))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.random_train)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.random_val)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.random_test)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.random_predict)


class ManualOptimBoringModel(BoringModel):
    """``BoringModel`` under manual optimization."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        opt = self.optimizers()
        loss = self.step(batch)
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        return {"loss": loss}


class DemoModel(LightningModule):
    """The model of the CLI docs: one ``32 -> out_dim`` linear layer with ReLU, trained to shrink its outputs' sum.

    Batches are plain ``(batch, 32)`` tensors, as :class:`BoringDataModule` yields, so
    ``LightningCLI(DemoModel, BoringDataModule)`` runs as is; ``--model.out_dim`` and
    ``--model.learning_rate`` are its two options (Adam at ``learning_rate``).
    """

    def __init__(self, out_dim: int = 10, learning_rate: float = 0.02) -> None:
        super().__init__()
        self.l1 = nn.Linear(32, out_dim)
        self.learning_rate = learning_rate

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.l1(x.view(x.size(0), -1)))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self(batch).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.learning_rate)


class BoringDataModuleNoLen(LightningDataModule):
    """Loaders over iterable datasets without ``__len__`` (unknown epoch length), 32 features per item.

    ``setup(stage)`` builds only that stage's data, as :class:`BoringDataModule` does: 512 training, 128
    validation, 256 test and 64 prediction items; a loader whose stage was not set up raises.
    """

    _SIZES = {"random_train": 512, "random_val": 128, "random_test": 256, "random_predict": 64}
    random_train: RandomIterableDataset
    random_val: RandomIterableDataset
    random_test: RandomIterableDataset
    random_predict: RandomIterableDataset

    def setup(self, stage: str) -> None:
        for attr in _stage_attrs(stage, "random_train", "random_val", "random_test", "random_predict"):
            setattr(self, attr, RandomIterableDataset(32, self._SIZES[attr]))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.random_train)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.random_val)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.random_test)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.random_predict)


class IterableBoringDataModule(LightningDataModule):
    """Each hook returns a list of two loaders: one over a sized dataset, one over an iterable without length.

    Items have 4 features. The stage's ``setup`` builds the pair: 16 items each for training, 32 for
    validation, 64 for test, 128 for prediction.
    """

    _SIZES = {"train_datasets": 16, "val_datasets": 32, "test_datasets": 64, "predict_datasets": 128}
    train_datasets: list[Dataset]
    val_datasets: list[Dataset]
    test_datasets: list[Dataset]
    predict_datasets: list[Dataset]

    def setup(self, stage: str) -> None:
        for attr in _stage_attrs(stage, "train_datasets", "val_datasets", "test_datasets", "predict_datasets"):
            n = self._SIZES[attr]
            setattr(self, attr, [RandomDataset(4, n), RandomIterableDataset(4, n)])

    def train_dataloader(self) -> list[DataLoader]:
        return [DataLoader(ds) for ds in self.train_datasets]

    def val_dataloader(self) -> list[DataLoader]:
        return [DataLoader(ds) for ds in self.val_datasets]

    def test_dataloader(self) -> list[DataLoader]:
        return [DataLoader(ds) for ds in self.test_datasets]

    def predict_dataloader(self) -> list[DataLoader]:
        return [DataLoader(ds) for ds in self.predict_datasets]


def _stage_attrs(stage: str, train: str, val: str, test: str, predict: str) -> list[str]:
    """The data attributes a ``setup(stage)`` builds: fit builds train and val, validate val, test test..."""
    return {"fit": [train, val], "validate": [val], "test": [test], "predict": [predict]}.get(stage, [])


class Net(nn.Module):
    """A small convolutional classifier for 1x28x28 images (MNIST-sized); returns log-probabilities of 10 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25)
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 12 * 12, 64), nn.ReLU(), nn.Dropout(0.5),
                                        nn.Linear(64, 10))

    def forward(self, x: Tensor) -> Tensor:
        return F.log_softmax(self.classifier(self.features(x)), dim=1)
