"""A character-level transformer language model trained on Shakespeare's sonnets (bundled, public domain).

    python examples/char_lm.py           # 12 epochs (about a minute on 2 idle CPU cores)
    python examples/char_lm.py --fast    # a smaller model for 80 steps, for the test suite

The text is ``examples/data/sonnets.txt`` (24 KB). The model reads ``block_size`` characters and predicts
each next one; its validation perplexity starts near the alphabet size (a uniform guess) and drops as it
learns spelling and meter. Prints a generated sample, then one machine-checkable line:
``RESULT vocab_size=<int> initial_perplexity=<float> final_perplexity=<float>``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

import torchbolt as pl

TEXT = Path(__file__).resolve().parent / "data" / "sonnets.txt"


class CharWindows(Dataset):
    """``(x, y)`` pairs of ``block_size`` characters, ``y`` shifted by one, starting every ``stride``."""

    def __init__(self, ids: torch.Tensor, block_size: int, stride: int) -> None:
        self.ids, self.block_size = ids, block_size
        self.starts = range(0, len(ids) - block_size - 1, stride)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.starts[index]
        chunk = self.ids[start : start + self.block_size + 1]
        return chunk[:-1], chunk[1:]


class CharDataModule(pl.LightningDataModule):
    """The text as character ids: the first 90% to train on, the rest to validate."""

    def __init__(self, path: str = str(TEXT), block_size: int = 64, batch_size: int = 32) -> None:
        super().__init__()
        self.path, self.block_size, self.batch_size = path, block_size, batch_size
        text = Path(path).read_text(encoding="utf-8")
        self.chars = sorted(set(text))  # the vocabulary is known before the model is built
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.ids = torch.tensor([self.stoi[c] for c in text], dtype=torch.long)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def setup(self, stage: str) -> None:
        split = int(0.9 * len(self.ids))
        self.train_set = CharWindows(self.ids[:split], self.block_size, stride=self.block_size // 4)
        self.val_set = CharWindows(self.ids[split:], self.block_size, stride=self.block_size)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=256)


class CharTransformer(pl.LightningModule):
    """A small decoder-only transformer: embeddings, ``n_layer`` causal self-attention blocks, a linear head."""

    def __init__(self, vocab_size: int, block_size: int = 64, d_model: int = 64, n_head: int = 4,
                 n_layer: int = 2, dropout: float = 0.1, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.token_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Parameter(torch.zeros(1, block_size, d_model))
        layer = nn.TransformerEncoderLayer(d_model, n_head, 4 * d_model, dropout, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, n_layer, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        # built once: position i may attend to positions <= i only
        self.register_buffer("causal_mask", nn.Transformer.generate_square_subsequent_mask(block_size), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Next-character logits ``(batch, time, vocab)`` for ids ``(batch, time)``, time <= block_size."""
        t = ids.shape[1]
        x = self.token_emb(ids) + self.pos_emb[:, :t]
        x = self.blocks(x, mask=self.causal_mask[:t, :t], is_causal=True)
        return self.head(self.norm(x))

    def _loss(self, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x).flatten(0, 1), y.flatten())

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._loss(batch), prog_bar=True)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        total = self.trainer.estimated_stepping_batches
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.hparams.lr, total_steps=int(total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, length: int, temperature: float = 0.8) -> list[int]:
        """Sample ``length`` characters after ``prompt`` (1-D ids)."""
        ids = prompt.view(1, -1).to(self.device)
        for _ in range(length):
            logits = self(ids[:, -self.hparams.block_size :])[:, -1] / temperature
            ids = torch.cat([ids, torch.multinomial(logits.softmax(-1), 1)], dim=1)
        return ids[0, prompt.numel() :].tolist()


def main(argv: list[str] | None = None) -> tuple[float, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-epochs", type=int, default=12)
    parser.add_argument("--fast", action="store_true", help="a smaller model, 80 steps (used by the tests)")
    parser.add_argument("--root-dir", default=".", help="where lightning_logs/ is written")
    args = parser.parse_args(argv)

    pl.seed_everything(0)
    # --fast: a narrower model on shorter windows, for a few dozen steps
    data = CharDataModule(block_size=32 if args.fast else 64)
    model = CharTransformer(data.vocab_size, block_size=data.block_size, d_model=32 if args.fast else 64,
                            lr=1e-2 if args.fast else 5e-3)
    trainer = pl.Trainer(
        max_epochs=args.max_epochs,
        max_steps=80 if args.fast else -1,
        default_root_dir=args.root_dir,
        enable_progress_bar=not args.fast,
        enable_model_summary=not args.fast,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        gradient_clip_val=1.0,
        log_every_n_steps=10,
    )
    initial = math.exp(trainer.validate(model, datamodule=data, verbose=False)[0]["val_loss"])
    trainer.fit(model, datamodule=data)
    final = math.exp(trainer.validate(model, datamodule=data, verbose=False)[0]["val_loss"])

    model.eval()
    prompt = "Shall I "
    sample = data.decode(model.generate(torch.tensor([data.stoi[c] for c in prompt]), length=200))
    print(f"--- sample ---\n{prompt}{sample}\n--------------")
    print(f"validation perplexity: {initial:.2f} before training, {final:.2f} after ({data.vocab_size} characters)")
    print(f"RESULT vocab_size={data.vocab_size} initial_perplexity={initial:.4f} final_perplexity={final:.4f}")
    return initial, final


if __name__ == "__main__":
    main()
