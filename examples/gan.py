"""A GAN that learns to draw 8x8 digits, trained with manual optimization and two optimizers.

    python examples/gan.py           # ~40 epochs
    python examples/gan.py --fast    # a few epochs, for the test suite

Each training step updates the discriminator, then the generator, with ``self.optimizers()``,
``self.manual_backward`` and ``toggle_optimizer`` (the pattern Lightning users know). Prints one
machine-checkable line: ``RESULT samples_shape=<shape> d_loss=<float> g_loss=<float> real_score=<float>
fake_score=<float> optimizer_steps=<int> batches=<int>``.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl


class DigitsImages(pl.LightningDataModule):
    """The 1,797 8x8 digits as ``(1, 8, 8)`` images scaled to [-1, 1] (bundled with scikit-learn)."""

    def __init__(self, batch_size: int = 64) -> None:
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage: str) -> None:
        images = torch.tensor(load_digits().data, dtype=torch.float32).view(-1, 1, 8, 8)
        self.train_set = TensorDataset(images / 8.0 - 1.0)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True)


class Generator(nn.Module):
    def __init__(self, latent_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, 64), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, 1, 8, 8)


class Discriminator(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(64, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)  # logits: real > 0 > fake


class GAN(pl.LightningModule):
    """Generator and discriminator with one Adam each, stepped by hand in ``training_step``."""

    def __init__(self, latent_dim: int = 16, hidden: int = 128, lr: float = 2e-4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = Generator(latent_dim, hidden)
        self.discriminator = Discriminator(hidden)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def sample(self, n: int) -> torch.Tensor:
        """``n`` generated images of shape ``(n, 1, 8, 8)`` in [-1, 1]."""
        return self(torch.randn(n, self.hparams.latent_dim, device=self.device))

    def training_step(self, batch, batch_idx):
        (real,) = batch
        opt_g, opt_d = self.optimizers()
        z = torch.randn(real.shape[0], self.hparams.latent_dim, device=self.device)
        ones = torch.ones(real.shape[0], 1, device=self.device)
        zeros = torch.zeros_like(ones)

        # discriminator: real images -> 1, generated ones -> 0 (generator frozen: detach)
        self.toggle_optimizer(opt_d)
        fake = self.generator(z).detach()
        d_loss = (F.binary_cross_entropy_with_logits(self.discriminator(real), ones)
                  + F.binary_cross_entropy_with_logits(self.discriminator(fake), zeros)) / 2
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        # generator: make the discriminator call its images real
        self.toggle_optimizer(opt_g)
        g_loss = F.binary_cross_entropy_with_logits(self.discriminator(self.generator(z)), ones)
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        self.log_dict({"d_loss": d_loss, "g_loss": g_loss}, prog_bar=True)

    def configure_optimizers(self):
        lr, betas = self.hparams.lr, (0.5, 0.999)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=betas)
        return [opt_g, opt_d]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--fast", action="store_true", help="train a few epochs only (used by the tests)")
    parser.add_argument("--root-dir", default=".", help="where lightning_logs/ is written")
    args = parser.parse_args(argv)

    pl.seed_everything(0)
    data, model = DigitsImages(), GAN()
    trainer = pl.Trainer(
        max_epochs=3 if args.fast else args.max_epochs,
        default_root_dir=args.root_dir,
        enable_progress_bar=not args.fast,
        enable_model_summary=not args.fast,
        enable_checkpointing=False,
        log_every_n_steps=10,
    )
    trainer.fit(model, datamodule=data)

    model.eval()
    with torch.no_grad():
        samples = model.sample(16)
        real = next(iter(data.train_dataloader()))[0]
        real_score = torch.sigmoid(model.discriminator(real)).mean().item()
        fake_score = torch.sigmoid(model.discriminator(samples)).mean().item()
    d_loss = float(trainer.callback_metrics["d_loss"])
    g_loss = float(trainer.callback_metrics["g_loss"])
    shape = "x".join(str(s) for s in samples.shape)
    print(f"16 samples in [{samples.min().item():.2f}, {samples.max().item():.2f}]; discriminator says"
          f" real={real_score:.3f}, generated={fake_score:.3f}")
    # with manual optimization every optimizer.step() counts: two per batch here
    print(f"RESULT samples_shape={shape} d_loss={d_loss:.6f} g_loss={g_loss:.6f}"
          f" real_score={real_score:.6f} fake_score={fake_score:.6f}"
          f" optimizer_steps={trainer.global_step} batches={trainer.num_training_batches * trainer.current_epoch}")
    return {"d_loss": d_loss, "g_loss": g_loss, "real_score": real_score, "fake_score": fake_score}


if __name__ == "__main__":
    main()
