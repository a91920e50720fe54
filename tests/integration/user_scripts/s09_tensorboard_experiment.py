"""self.logger.experiment is a SummaryWriter: add_image, add_histogram, log_graph and hparams metrics."""

import json

import torch
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.loggers import TensorBoardLogger


class ImageModel(pl.LightningModule):
    def __init__(self, lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.fc = torch.nn.Linear(2 * 8 * 8, 3)
        self.example_input_array = torch.zeros(1, 1, 8, 8)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("hp_metric", torch.nn.functional.cross_entropy(self(x), y))
        if batch_idx == 0 and not self.trainer.sanity_checking:
            tensorboard = self.logger.experiment
            tensorboard.add_image("inputs", x[0], self.global_step)
            tensorboard.add_images("batch", x[:4], self.global_step)

    def on_train_epoch_end(self):
        for name, param in self.named_parameters():
            self.logger.experiment.add_histogram(name, param, self.current_epoch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def main():
    pl.seed_everything(11)
    x = torch.rand(48, 1, 8, 8)
    y = torch.randint(0, 3, (48,))
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    logger = TensorBoardLogger("tb_logs", name="my_model", log_graph=True, default_hp_metric=False)
    trainer = pl.Trainer(max_epochs=2, logger=logger, log_every_n_steps=2, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(ImageModel(), loader, loader)
    result = {"log_dir": logger.log_dir, "version": logger.version, "name": logger.name,
              "root_dir": logger.root_dir}
    with open("result.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
