"""A word-level language model demo: a small ``nn.Transformer`` trained on a WikiText-2-shaped corpus.

Nothing here downloads. ``WikiText2`` reads ``<data_dir>/wikitext-2.txt`` when that file exists (put the
real WikiText-2 training text there to use it); otherwise it builds a small synthetic English-like corpus
from a fixed seed, so the demo and tests run offline and identically everywhere.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from torchbolt.core.module import LightningModule

_CORPUS_FILE = "wikitext-2.txt"
_SUBJECTS = ["the river", "a small town", "the old bridge", "the museum", "the railway", "a local band", "the city"]
_VERBS = ["was built in", "was renamed in", "opened in", "was restored in", "closed in", "became famous in"]
_TAILS = ["after a long debate", "with help from the council", "during the war", "to mixed reviews",
          "under a new owner", "for the first time"]


def _synthetic_corpus(lines: int = 20_000, seed: int = 1234) -> str:
    """Deterministic sentences with a small vocabulary and some structure a model can learn.

    The default gives about 6,800 blocks of 35 words: Lightning's transformer example holds out 2,000 blocks each
    for validation and test (``random_split(dataset, [n - 4000, 2000, 2000])``), so the corpus must exceed 4,000.
    """
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        year = rng.randint(1850, 1999)
        out.append(f" {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {year} {rng.choice(_TAILS)} . ")
    return "\n".join(out) + "\n"


class Dictionary:
    """A two-way map between words and consecutive integer ids."""

    def __init__(self) -> None:
        self.word2idx: dict[str, int] = {}
        self.idx2word: list[str] = []

    def add_word(self, word: str) -> int:
        """The id of ``word``, giving it the next free id when it is new."""
        if word not in self.word2idx:
            self.idx2word.append(word)
            self.word2idx[word] = len(self.idx2word) - 1
        return self.word2idx[word]

    def __len__(self) -> int:
        return len(self.idx2word)


def tokenize(path: Path) -> tuple[Tensor, Dictionary]:
    """The text file at ``path`` as one long tensor of word ids (each line ends with ``<eos>``) and its dictionary."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No text file at {path}")
    dictionary = Dictionary()
    ids: list[int] = []
    with path.open(encoding="utf8") as f:
        for line in f:
            ids.extend(dictionary.add_word(word) for word in [*line.split(), "<eos>"])
    return torch.tensor(ids, dtype=torch.long), dictionary


class WikiText2(Dataset):
    """Blocks of ``block_size`` word ids; item ``i`` is ``(input, target)`` with the target shifted by one word.

    Reads ``data_dir/wikitext-2.txt``. When it is missing and ``download=True``, the synthetic corpus (see
    the module docstring) is written there first, since nothing is downloaded; with ``download=False`` a
    missing file is an error.
    """

    def __init__(self, data_dir: Path = Path("data"), block_size: int = 35, download: bool = True) -> None:
        super().__init__()
        if block_size < 1:
            raise ValueError(f"`block_size` must be at least 1, got {block_size}")
        self.path = Path(data_dir) / _CORPUS_FILE
        if not self.path.is_file():
            if not download:
                raise FileNotFoundError(f"{self.path} is missing; pass `download=True` to create the demo corpus")
            self.download(self.path)
        self.data, self.dictionary = tokenize(self.path)
        self.block_size = block_size

    @property
    def vocab_size(self) -> int:
        """How many distinct words the corpus has (the model's embedding size must cover them)."""
        return len(self.dictionary)

    def __len__(self) -> int:
        return len(self.data) // self.block_size - 1

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        start = index * self.block_size
        chunk = self.data[start : start + self.block_size + 1]
        return chunk[:-1], chunk[1:]

    @staticmethod
    def download(destination: Path) -> None:
        """Write the offline demo corpus to ``destination`` (named for Lightning's method; nothing is fetched)."""
        destination = Path(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(_synthetic_corpus(), encoding="utf8")


class PositionalEncoding(nn.Module):
    """Adds fixed sine/cosine position signals to a ``(batch, sequence, dim)`` input, then dropout."""

    def __init__(self, dim: int, dropout: float = 0.1, max_len: int = 5000) -> None:
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        position = torch.arange(max_len).unsqueeze(1)
        frequency = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_len, dim)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency)[:, : dim // 2]
        self.register_buffer("pe", table.unsqueeze(0), persistent=False)

    pe: Tensor

    def forward(self, x: Tensor) -> Tensor:
        if x.size(1) > self.pe.size(1):
            raise ValueError(f"Sequence length {x.size(1)} exceeds `max_len` {self.pe.size(1)}")
        return self.dropout(x + self.pe[:, : x.size(1)])


class Transformer(nn.Module):
    """An encoder-decoder ``nn.Transformer`` language model over ``vocab_size`` words (batch-first).

    ``forward(inputs, target, mask=None)`` takes ``(batch, sequence)`` word ids and returns
    ``(batch * sequence, vocab_size)`` log-probabilities of the next word; the decoder is causally masked
    unless ``mask`` is given.
    """

    def __init__(self, vocab_size: int = 33278, ninp: int = 200, nhead: int = 2, nhid: int = 200,
                 nlayers: int = 2, dropout: float = 0.2) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, ninp)
        self.pos_encoder = PositionalEncoding(ninp, dropout)
        self.transformer = nn.Transformer(
            d_model=ninp, nhead=nhead, num_encoder_layers=nlayers, num_decoder_layers=nlayers,
            dim_feedforward=nhid, dropout=dropout, batch_first=True,
        )
        self.decoder = nn.Linear(ninp, vocab_size)
        self.ninp = ninp

    @staticmethod
    def generate_square_subsequent_mask(size: int) -> Tensor:
        """A ``(size, size)`` float mask: ``-inf`` above the diagonal, so position ``i`` sees only ``<= i``."""
        return torch.triu(torch.full((size, size), float("-inf")), diagonal=1)

    def forward(self, inputs: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            mask = self.generate_square_subsequent_mask(target.size(1)).to(inputs.device)
        scale = math.sqrt(self.ninp)
        src = self.pos_encoder(self.embedding(inputs) * scale)
        tgt = self.pos_encoder(self.embedding(target) * scale)
        out = self.transformer(src, tgt, tgt_mask=mask)
        # flattened to (batch * sequence, vocab_size), the shape `F.nll_loss(output, target.view(-1))` takes
        return F.log_softmax(self.decoder(out), dim=-1).view(-1, self.vocab_size)


class LightningTransformer(LightningModule):
    """``Transformer`` trained with next-word negative log-likelihood on ``WikiText2`` blocks (SGD, lr 0.1)."""

    def __init__(self, vocab_size: int = 33278) -> None:
        super().__init__()
        self.model = Transformer(vocab_size=vocab_size)

    def forward(self, inputs: Tensor, target: Tensor) -> Tensor:
        return self.model(inputs, target)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, target = batch
        output = self(inputs, target)
        loss = F.nll_loss(output.reshape(-1, output.size(-1)), target.reshape(-1))
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.model.parameters(), lr=0.1)

    def prepare_data(self) -> None:
        WikiText2(download=True)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(WikiText2(), batch_size=20)


__all__ = ["Dictionary", "LightningTransformer", "PositionalEncoding", "Transformer", "WikiText2", "tokenize"]
