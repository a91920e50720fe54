"""An MNIST-shaped dataset and data module for examples (``from torchbolt.demos.mnist_datamodule import MNIST``).

Nothing here downloads. ``MNIST(root, train=...)`` reads ``<root>/MNIST/complete/training.pt`` (or ``test.pt``)
when that file exists: a ``(images, targets)`` pair, images ``uint8`` of shape ``(N, 28, 28)`` (put the real
MNIST there to use it). Otherwise it builds synthetic handwriting-free digits from a fixed seed: each image is
the digit's glyph drawn at a random place in the 28x28 frame with pixel noise, 60,000 training images and
10,000 test images (MNIST's sizes, so splits such as ``random_split(dataset, [55000, 5000])`` work), and a
model can learn to tell them apart.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, random_split

from torchbolt.core.datamodule import LightningDataModule

_DATASETS_PATH = "./data"
_TRAIN_SIZE = 60_000
_TEST_SIZE = 10_000

# 3x5 glyphs of the digits 0-9, one string per row ("#" = ink)
_GLYPHS = (
    ("###", "#.#", "#.#", "#.#", "###"),
    (".#.", "##.", ".#.", ".#.", "###"),
    ("###", "..#", "###", "#..", "###"),
    ("###", "..#", ".##", "..#", "###"),
    ("#.#", "#.#", "###", "..#", "..#"),
    ("###", "#..", "###", "..#", "###"),
    ("###", "#..", "###", "#.#", "###"),
    ("###", "..#", ".#.", ".#.", ".#."),
    ("###", "#.#", "###", "#.#", "###"),
    ("###", "#.#", "###", "..#", "###"),
)
_SCALE = 4  # each glyph cell becomes a 4x4 block: glyphs are 12 wide and 20 high


def _synthetic_digits(count: int, seed: int) -> tuple[Tensor, Tensor]:
    """``count`` noisy ``uint8`` digit images ``(count, 28, 28)`` and their labels, the same for the same seed."""
    generator = torch.Generator().manual_seed(seed)
    glyphs = torch.tensor([[[c == "#" for c in row] for row in glyph] for glyph in _GLYPHS], dtype=torch.float32)
    glyphs = (glyphs * 178).to(torch.uint8)  # ink 178, background 0
    glyphs = glyphs.repeat_interleave(_SCALE, dim=1).repeat_interleave(_SCALE, dim=2)  # (10, 20, 12)
    height, width = glyphs.shape[1:]
    free_y, free_x = 28 - height + 1, 28 - width + 1
    # every glyph at every position, drawn once (10 x 9 x 17 small frames); each image then is one lookup
    frames = torch.stack([
        torch.nn.functional.pad(glyphs, (x, free_x - 1 - x, y, free_y - 1 - y))
        for y in range(free_y) for x in range(free_x)
    ], dim=1)  # (10, positions, 28, 28)
    targets = torch.randint(0, 10, (count,), generator=generator)
    position = torch.randint(0, free_y * free_x, (count,), generator=generator)
    images = frames[targets, position]
    # pixel noise up to 77 (ink + noise stays within uint8)
    images += torch.randint(0, 78, (count, 28, 28), generator=generator, dtype=torch.uint8)
    return images, targets


class MNIST(Dataset):
    """MNIST-shaped images: item ``i`` is ``(image, label)``, ``image`` a float ``(1, 28, 28)`` tensor in ``[0, 1]``.

    Args:
        root: where real MNIST files are looked for (``<root>/MNIST/complete/{training,test}.pt``).
        train: the 60,000-image training set, else the 10,000-image test set.
        normalize: ``(mean, std)`` to standardize images with, or ``None`` to keep ``[0, 1]``.
        download: accepted for compatibility; nothing is fetched (the synthetic set needs no files).
        transform: applied to each image tensor after normalization (any callable on tensors).
    """

    TRAIN_FILE_NAME = "training.pt"
    TEST_FILE_NAME = "test.pt"
    cache_folder_name = "complete"

    def __init__(self, root: str | os.PathLike = _DATASETS_PATH, train: bool = True,
                 normalize: tuple[float, float] | None = None, download: bool = True,
                 transform: Callable[[Tensor], Any] | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.root = str(root)
        self.train = train
        self.normalize = normalize
        self.transform = transform
        path = Path(self.cached_folder_path) / (self.TRAIN_FILE_NAME if train else self.TEST_FILE_NAME)
        if path.is_file():
            self.data, self.targets = torch.load(path, weights_only=True)
        else:
            # different seeds for the two splits, so the test set is not a copy of the training set
            self.data, self.targets = _synthetic_digits(_TRAIN_SIZE if train else _TEST_SIZE, 0 if train else 1)

    @property
    def cached_folder_path(self) -> str:
        """The folder real MNIST files are read from."""
        return os.path.join(self.root, "MNIST", self.cache_folder_name)

    def __getitem__(self, idx: int) -> tuple[Any, int]:
        img = self.data[idx].float().div(255).unsqueeze(0)
        if self.normalize is not None:
            mean, std = self.normalize
            img = img.sub(mean).div(std)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[idx])

    def __len__(self) -> int:
        return len(self.data)


class MNISTDataModule(LightningDataModule):
    """MNIST train/validation/test splits: the last ``val_split`` training images (shuffled with ``seed``) validate.

    Args:
        data_dir: where real MNIST files are looked for (see :class:`MNIST`).
        val_split: how many training images form the validation set.
        num_workers: data loader worker processes.
        normalize: standardize images to mean 0.5 / std 0.5 (``[-1, 1]``) instead of ``[0, 1]``.
        seed: seeds the train/validation split.
        batch_size: samples per batch.
    """

    name = "mnist"

    def __init__(self, data_dir: str = _DATASETS_PATH, val_split: int = 5000, num_workers: int = 16,
                 normalize: bool = False, seed: int = 42, batch_size: int = 32) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.val_split = val_split
        self.num_workers = num_workers
        self.normalize = normalize
        self.seed = seed
        self.batch_size = batch_size

    @property
    def num_classes(self) -> int:
        """Ten digits."""
        return 10

    def _dataset(self, train: bool) -> MNIST:
        return MNIST(self.data_dir, train=train, normalize=(0.5, 0.5) if self.normalize else None)

    def prepare_data(self) -> None:
        """Nothing to fetch: the data is read or generated where it is used."""

    def setup(self, stage: str) -> None:
        """Split the training images into training and validation subsets."""
        dataset = self._dataset(train=True)
        self.dataset_train, self.dataset_val = random_split(
            dataset, [len(dataset) - self.val_split, self.val_split], generator=torch.Generator().manual_seed(self.seed)
        )

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          drop_last=True)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training subset (the validation images removed)."""
        return self._loader(self.dataset_train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """The ``val_split`` validation images, in order."""
        return self._loader(self.dataset_val, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """The test set, in order."""
        return self._loader(self._dataset(train=False), shuffle=False)


__all__ = ["MNIST", "MNISTDataModule"]
