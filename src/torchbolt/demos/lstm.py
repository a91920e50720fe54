"""A word-level LSTM language model demo whose hidden state carries across consecutive batches.

Uses ``WikiText2`` from ``torchbolt.demos.transformer`` (offline; see there).
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler

from torchbolt.core.module import LightningModule
from torchbolt.demos.transformer import WikiText2


class SimpleLSTM(nn.Module):
    """Embedding -> ``nlayers``-layer LSTM -> linear decoder to ``vocab_size`` log-probabilities (batch-first)."""

    def __init__(self, vocab_size: int = 33278, ninp: int = 512, nhid: int = 512, nlayers: int = 4,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.nhid = nhid
        self.nlayers = nlayers
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(vocab_size, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout if nlayers > 1 else 0.0, batch_first=True)
        self.decoder = nn.Linear(nhid, vocab_size)
        self.init_weights()

    def init_weights(self) -> None:
        """Small uniform embedding and decoder weights, zero decoder bias."""
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, input: Tensor, hidden: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``(batch, sequence)`` ids and a hidden state -> ``(batch, sequence, vocab)`` log-probabilities and the new state."""
        output, hidden = self.rnn(self.drop(self.encoder(input)), hidden)
        return F.log_softmax(self.decoder(self.drop(output)), dim=-1), hidden

    def init_hidden(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """A zero ``(h, c)`` state for ``batch_size`` sequences, on the model's device and dtype."""
        weight = next(self.parameters())
        shape = (self.nlayers, batch_size, self.nhid)
        return weight.new_zeros(shape), weight.new_zeros(shape)


class SequenceSampler(Sampler[list[int]]):
    """Batches such that row ``r`` of batch ``k + 1`` continues the text of row ``r`` of batch ``k``.

    The dataset's ``len(dataset)`` blocks are split into ``batch_size`` contiguous streams; batch ``k``
    takes the ``k``-th block of every stream. Blocks that do not fill a whole batch are dropped. This is
    what lets a recurrent model carry its hidden state from one batch to the next.
    """

    def __init__(self, dataset: Sized, batch_size: int) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be at least 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.chunk_size = len(dataset) // batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.chunk_size):
            yield [row * self.chunk_size + step for row in range(self.batch_size)]

    def __len__(self) -> int:
        return self.chunk_size


class LightningLSTM(LightningModule):
    """``SimpleLSTM`` trained on ``WikiText2`` with ``SequenceSampler`` batches, the hidden state carried over
    (and detached) between batches and reset at each epoch's end."""

    def __init__(self, vocab_size: int = 33278) -> None:
        super().__init__()
        self.model = SimpleLSTM(vocab_size=vocab_size)
        self.hidden: tuple[Tensor, Tensor] | None = None

    def on_train_epoch_end(self) -> None:
        self.hidden = None

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, target = batch
        if self.hidden is None:
            self.hidden = self.model.init_hidden(inputs.size(0))
        hidden = (self.hidden[0].detach(), self.hidden[1].detach())
        output, self.hidden = self.model(inputs, hidden)
        loss = F.nll_loss(output.reshape(-1, output.size(-1)), target.reshape(-1))
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def prepare_data(self) -> None:
        WikiText2(download=True)

    def train_dataloader(self) -> DataLoader:
        dataset = WikiText2()
        return DataLoader(dataset, batch_sampler=SequenceSampler(dataset, batch_size=20))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=20.0)


__all__ = ["LightningLSTM", "SequenceSampler", "SimpleLSTM"]
