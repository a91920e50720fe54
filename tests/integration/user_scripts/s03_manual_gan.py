"""The docs' GAN with manual optimization: two optimizers, toggle_optimizer, manual_backward, schedulers."""

import json

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl


class GAN(pl.LightningModule):
    def __init__(self, latent_dim: int = 4, lr: float = 2e-3):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = nn.Sequential(nn.Linear(latent_dim, 16), nn.ReLU(), nn.Linear(16, 2))
        self.discriminator = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1))
        self.d_steps = 0
        self.g_steps = 0

    def forward(self, z):
        return self.generator(z)

    def training_step(self, batch, batch_idx):
        (real,) = batch
        opt_g, opt_d = self.optimizers()
        z = torch.randn(real.shape[0], self.hparams.latent_dim, device=self.device)

        self.toggle_optimizer(opt_g)
        fake = self(z)
        g_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake), torch.ones(real.shape[0], 1))
        self.log("g_loss", g_loss, prog_bar=True)
        self.manual_backward(g_loss)
        opt_g.step()
        opt_g.zero_grad()
        self.untoggle_optimizer(opt_g)
        self.g_steps += 1

        if (batch_idx + 1) % 2 == 0:
            self.toggle_optimizer(opt_d)
            real_loss = F.binary_cross_entropy_with_logits(self.discriminator(real), torch.ones(real.shape[0], 1))
            fake_loss = F.binary_cross_entropy_with_logits(self.discriminator(self(z).detach()),
                                                           torch.zeros(real.shape[0], 1))
            d_loss = (real_loss + fake_loss) / 2
            self.log("d_loss", d_loss, prog_bar=True)
            self.manual_backward(d_loss)
            self.clip_gradients(opt_d, gradient_clip_val=0.5, gradient_clip_algorithm="norm")
            opt_d.step()
            opt_d.zero_grad()
            self.untoggle_optimizer(opt_d)
            self.d_steps += 1

    def on_train_epoch_end(self):
        sch_g, sch_d = self.lr_schedulers()
        sch_g.step()
        sch_d.step()

    def configure_optimizers(self):
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr, betas=(0.5, 0.999))
        sch_g = torch.optim.lr_scheduler.StepLR(opt_g, step_size=1, gamma=0.5)
        sch_d = torch.optim.lr_scheduler.StepLR(opt_d, step_size=1, gamma=0.5)
        return [opt_g, opt_d], [sch_g, sch_d]


def main():
    pl.seed_everything(0)
    real = torch.randn(96, 2) * 0.5 + 2.0
    loader = DataLoader(TensorDataset(real), batch_size=16, shuffle=True)
    model = GAN()
    trainer = pl.Trainer(max_epochs=2, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir="gan_run", log_every_n_steps=1)
    trainer.fit(model, loader)
    result = {
        "global_step": trainer.global_step,
        "g_steps": model.g_steps,
        "d_steps": model.d_steps,
        "lrs": [opt.param_groups[0]["lr"] for opt in trainer.optimizers],
        "callback_metrics": sorted(trainer.callback_metrics),
        "ckpts": [str(p) for p in sorted(__import__("pathlib").Path("gan_run").rglob("*.ckpt"))],
    }
    with open("result.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
