"""The seeds' MNISTDataModule pattern (prepare_data / setup(stage) / three loaders) on sklearn digits."""

import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset, random_split

import torchbolt as pl


class MNISTDataModule(pl.LightningDataModule):
    def __init__(self, data_dir="./"):
        super().__init__()
        self.data_dir = data_dir

    def prepare_data(self):
        # "download"
        load_digits()

    def setup(self, stage=None):
        x, y = load_digits(return_X_y=True)
        full = TensorDataset(torch.tensor(x, dtype=torch.float32) / 16, torch.tensor(y))
        # Assign train/val datasets for use in dataloaders
        if stage == 'fit' or stage is None:
            self.mnist_train, self.mnist_val = random_split(full, [1497, 300],
                                                            generator=torch.Generator().manual_seed(0))
        # Assign test dataset for use in dataloader(s)
        if stage == 'test' or stage is None:
            self.mnist_test = full

    def train_dataloader(self):
        return DataLoader(self.mnist_train, batch_size=64)

    def val_dataloader(self):
        return DataLoader(self.mnist_val, batch_size=64)

    def test_dataloader(self):
        return DataLoader(self.mnist_test, batch_size=64)


class LitModel(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x):
        return self.model(x.view(x.size(0), -1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log('train_loss', loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log('val_loss', F.cross_entropy(self(x), y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log('test_loss', F.cross_entropy(logits, y))
        self.log('test_acc', (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.001)


if __name__ == "__main__":
    pl.seed_everything(0)
    model = LitModel()
    data = MNISTDataModule()
    trainer = pl.Trainer(max_epochs=10)
    trainer.fit(model, data)
    result = trainer.test(datamodule=data)
    print(f"RESULT test_acc={result[0]['test_acc']:.4f}")
