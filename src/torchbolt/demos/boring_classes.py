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


class BoringDataModuleNoLen(BoringDataModule):
    """``BoringDataModule`` whose loaders read iterable datasets without ``__len__`` (unknown epoch length)."""

    def setup(self, stage: str) -> None:
        pass

    def train_dataloader(self) -> DataLoader:
        return DataLoader(RandomIterableDataset(32, 64))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(RandomIterableDataset(32, 64))

    def test_dataloader(self) -> DataLoader:
        return DataLoader(RandomIterableDataset(32, 64))

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(RandomIterableDataset(32, 64))


class IterableBoringDataModule(BoringDataModule):
    """``BoringDataModule`` whose loaders read iterable datasets that do define ``__len__``."""

    def setup(self, stage: str) -> None:
        pass

    def train_dataloader(self) -> DataLoader:
        return DataLoader(RandomIterableDatasetWithLen(32, 64))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(RandomIterableDatasetWithLen(32, 64))

    def test_dataloader(self) -> DataLoader:
        return DataLoader(RandomIterableDatasetWithLen(32, 64))

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(RandomIterableDatasetWithLen(32, 64))


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
