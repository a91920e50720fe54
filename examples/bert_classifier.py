"""A BERT-style sentence classifier built from a tiny ``transformers.BertConfig`` (nothing is downloaded).

    python examples/bert_classifier.py           # 8 epochs
    python examples/bert_classifier.py --fast    # 3 epochs on less data, for the test suite

The data are generated movie-review-like sentences over a small vocabulary: a review is positive when it
uses more positive than negative words, wherever they sit among the filler words. The model is
``BertForSequenceClassification`` with 2 layers of width 32, trained from scratch with a word-level
tokenizer defined here. Needs ``pip install transformers``. Prints one machine-checkable line:
``RESULT test_accuracy=<float> val_accuracy=<float>``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl

POSITIVE = ["good", "great", "excellent", "lovely", "superb", "wonderful", "brilliant", "moving", "fun", "charming"]
NEGATIVE = ["bad", "awful", "boring", "terrible", "dull", "weak", "poor", "clumsy", "tedious", "bland"]
FILLER = ["the", "movie", "film", "plot", "acting", "was", "is", "and", "but", "really", "quite", "very",
          "story", "cast", "music", "ending", "a", "an", "it", "this", "with", "of", "scenes", "overall"]
SPECIAL = ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]


class WordTokenizer:
    """Whitespace tokenizer over a fixed vocabulary: ``[CLS] words [SEP]``, padded to ``max_length``."""

    def __init__(self, words: list[str], max_length: int) -> None:
        self.vocab = {w: i for i, w in enumerate(SPECIAL + words)}
        self.max_length = max_length

    def __call__(self, sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.zeros(len(sentences), self.max_length, dtype=torch.long)  # [PAD] = 0
        for row, sentence in enumerate(sentences):
            tokens = [self.vocab.get(w, self.vocab["[UNK]"]) for w in sentence.split()][: self.max_length - 2]
            tokens = [self.vocab["[CLS]"], *tokens, self.vocab["[SEP]"]]
            ids[row, : len(tokens)] = torch.tensor(tokens)
        return ids, (ids != 0).long()


def make_reviews(n: int, seed: int) -> tuple[list[str], list[int]]:
    """``n`` sentences of 6-14 words with 1-5 sentiment words; label 1 when positive words outnumber negative."""
    rng = random.Random(seed)
    sentences, labels = [], []
    while len(sentences) < n:
        n_pos, n_neg = rng.randint(0, 3), rng.randint(0, 3)
        if n_pos == n_neg:
            continue  # ties have no label
        words = rng.choices(POSITIVE, k=n_pos) + rng.choices(NEGATIVE, k=n_neg)
        words += rng.choices(FILLER, k=rng.randint(6, 14) - len(words))
        rng.shuffle(words)
        sentences.append(" ".join(words))
        labels.append(int(n_pos > n_neg))
    return sentences, labels


class ReviewsDataModule(pl.LightningDataModule):
    def __init__(self, n_train: int = 3000, batch_size: int = 32, max_length: int = 16) -> None:
        super().__init__()
        self.n_train, self.batch_size = n_train, batch_size
        self.tokenizer = WordTokenizer(POSITIVE + NEGATIVE + FILLER, max_length)

    def _dataset(self, n: int, seed: int) -> TensorDataset:
        sentences, labels = make_reviews(n, seed)
        ids, mask = self.tokenizer(sentences)
        return TensorDataset(ids, mask, torch.tensor(labels))

    def setup(self, stage: str) -> None:
        self.train_set = self._dataset(self.n_train, seed=0)
        self.val_set = self._dataset(500, seed=1)
        self.test_set = self._dataset(500, seed=2)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=250)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=250)


class BertClassifier(pl.LightningModule):
    """``BertForSequenceClassification`` from a tiny config, trained from scratch."""

    def __init__(self, vocab_size: int, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 2,
                 lr: float = 2e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        from transformers import BertConfig, BertForSequenceClassification

        config = BertConfig(
            vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
            num_attention_heads=num_heads, intermediate_size=4 * hidden_size, max_position_embeddings=64,
            num_labels=2, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        )
        self.bert = BertForSequenceClassification(config)  # random init: no weights are fetched

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=ids, attention_mask=mask).logits

    def training_step(self, batch, batch_idx):
        ids, mask, labels = batch
        loss = self.bert(input_ids=ids, attention_mask=mask, labels=labels).loss
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch, prefix: str) -> None:
        ids, mask, labels = batch
        logits = self(ids, mask)
        self.log(f"{prefix}_loss", torch.nn.functional.cross_entropy(logits, labels))
        self.log(f"{prefix}_acc", (logits.argmax(-1) == labels).float().mean(), prog_bar=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-epochs", type=int, default=8)
    parser.add_argument("--fast", action="store_true", help="fewer examples and epochs (used by the tests)")
    parser.add_argument("--root-dir", default=".", help="where lightning_logs/ is written")
    args = parser.parse_args(argv)
    try:
        import transformers  # noqa: F401
    except ImportError:
        sys.exit("This example needs `transformers`: pip install transformers")

    pl.seed_everything(0)
    data = ReviewsDataModule(n_train=1500 if args.fast else 3000)
    model = BertClassifier(vocab_size=len(data.tokenizer.vocab))
    trainer = pl.Trainer(
        max_epochs=3 if args.fast else args.max_epochs,
        default_root_dir=args.root_dir,
        enable_progress_bar=not args.fast,
        enable_model_summary=not args.fast,
        enable_checkpointing=False,
        log_every_n_steps=10,
    )
    trainer.fit(model, datamodule=data)
    val_acc = float(trainer.callback_metrics["val_acc"])
    test_acc = trainer.test(model, datamodule=data, verbose=False)[0]["test_acc"]
    print(f"accuracy: validation {val_acc:.3f}, test {test_acc:.3f}")
    print(f"RESULT test_accuracy={test_acc:.4f} val_accuracy={val_acc:.4f}")
    return test_acc


if __name__ == "__main__":
    # everything is built locally: make sure transformers never tries the network
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
