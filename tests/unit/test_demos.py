"""The demo models and datasets: offline, small, and trainable."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import torchbolt as pl
from torchbolt.demos import (
    BoringDataModule,
    BoringModel,
    DemoModel,
    LightningLSTM,
    LightningTransformer,
    SequenceSampler,
    SimpleLSTM,
    Transformer,
    WikiText2,
)
from torchbolt.demos.boring_classes import BoringDataModuleNoLen, IterableBoringDataModule, Net
from torchbolt.demos.transformer import Dictionary, tokenize


def _trainer(**kwargs: object) -> pl.Trainer:
    return pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, **kwargs)  # type: ignore[arg-type]


def test_wikitext2_builds_an_offline_corpus_and_yields_shifted_blocks(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="download=True"):
        WikiText2(data_dir=tmp_path, download=False)
    data = WikiText2(data_dir=tmp_path, block_size=10)
    assert (tmp_path / "wikitext-2.txt").is_file()
    assert len(data) == len(data.data) // 10 - 1 and len(data) > 100
    x, y = data[3]
    assert x.shape == y.shape == (10,)
    assert torch.equal(x[1:], y[:-1])
    assert data.vocab_size == len(data.dictionary) < 300  # small, so a demo model stays small
    again = WikiText2(data_dir=tmp_path, block_size=10)  # reads the same file back
    assert torch.equal(again.data, data.data)


def test_tokenize_and_dictionary(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("a b a\nc\n")
    ids, dictionary = tokenize(path)
    assert ids.tolist() == [0, 1, 0, 2, 3, 2]
    assert dictionary.idx2word == ["a", "b", "<eos>", "c"]
    d = Dictionary()
    assert d.add_word("x") == 0 and d.add_word("x") == 0 and len(d) == 1


def test_transformer_shapes_and_causal_mask() -> None:
    model = Transformer(vocab_size=50, ninp=16, nhead=2, nhid=16, nlayers=1)
    x = torch.randint(0, 50, (3, 7))
    out = model(x, x)
    assert out.shape == (3 * 7, 50)  # flat, ready for `F.nll_loss(out, target.view(-1))`
    assert torch.allclose(out.exp().sum(-1), torch.ones(3 * 7), atol=1e-4)
    mask = Transformer.generate_square_subsequent_mask(3)
    assert torch.isinf(mask[0, 1]) and mask[1, 0] == 0


def test_lightning_transformer_trains_on_the_demo_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    vocab = WikiText2().vocab_size
    model = LightningTransformer(vocab_size=vocab)
    trainer = _trainer(max_steps=2)
    trainer.fit(model)
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train_loss"])


def test_sequence_sampler_keeps_rows_contiguous() -> None:
    batches = list(SequenceSampler(list(range(10)), batch_size=3))
    assert batches == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    assert len(SequenceSampler(list(range(10)), batch_size=3)) == 3


def test_lstm_and_lightning_lstm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lstm = SimpleLSTM(vocab_size=20, ninp=8, nhid=8, nlayers=2)
    out, (h, c) = lstm(torch.randint(0, 20, (4, 5)), lstm.init_hidden(4))
    assert out.shape == (4, 5, 20) and h.shape == c.shape == (2, 4, 8)
    monkeypatch.chdir(tmp_path)
    model = LightningLSTM(vocab_size=WikiText2().vocab_size)
    trainer = _trainer(max_steps=2)
    trainer.fit(model)
    assert trainer.global_step == 2
    assert model.hidden is None  # reset at the epoch's end, so the next epoch starts from a zero state


@pytest.mark.parametrize("datamodule", [BoringDataModule, BoringDataModuleNoLen])
def test_boring_data_modules_fit(datamodule: type) -> None:
    trainer = _trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=2)
    trainer.fit(BoringModel(), datamodule=datamodule())
    assert trainer.global_step == 3


def test_iterable_boring_data_module_gives_a_sized_and_an_unsized_loader_per_stage() -> None:
    dm = IterableBoringDataModule()
    with pytest.raises(AttributeError):
        dm.train_dataloader()  # nothing is built before setup
    dm.setup("fit")
    sized, unsized = dm.train_dataloader()
    assert len(sized.dataset) == 16 and not hasattr(unsized.dataset, "__len__")
    assert next(iter(sized)).shape == (1, 4)
    assert [len(loader.dataset) for loader in dm.val_dataloader()[:1]] == [32]
    dm.setup("predict")
    assert len(dm.predict_dataloader()[0].dataset) == 128


def test_net_and_demo_model() -> None:
    assert Net()(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert isinstance(DemoModel(), pl.LightningModule)
    assert isinstance(DataLoader([1]), DataLoader)
