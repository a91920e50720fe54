"""ModelPruning: scheduled sparsity, permanent pruning, the lottery ticket, checkpoints that load anywhere."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.callbacks import Callback, ModelPruning
from torchbolt.utilities.exceptions import MisconfigurationException


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 8, generator=g)
    return TensorDataset(x, x.sum(dim=1, keepdim=True))


class Model(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Linear(8, 16)
        self.layer2 = nn.Linear(16, 1)

    def forward(self, x):
        return self.layer2(torch.relu(self.layer1(x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return DataLoader(_data(), batch_size=8)


def _weights(model: Model) -> list[torch.Tensor]:
    return [model.layer1.weight, model.layer2.weight]


def _sparsity(model: Model) -> float:
    weights = _weights(model)
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


class SparsityAtEpochEnd(Callback):
    def __init__(self) -> None:
        self.sparsity: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.sparsity.append(_sparsity(pl_module))


def _fit(model: Model, *callbacks: Callback, max_epochs: int = 3) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=max_epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, callbacks=list(callbacks))
    trainer.fit(model)
    return trainer


def test_pruning_reaches_the_scheduled_sparsity_every_epoch():
    model = Model()
    recorder = SparsityAtEpochEnd()  # after the pruning callback: sees each epoch's pruning
    pruning = ModelPruning("l1_unstructured", parameters_to_prune=[(model.layer1, "weight"), (model.layer2, "weight")],
                           amount=lambda epoch: [0.5, 0.5, 0.0][epoch], make_pruning_permanent=False,
                           use_lottery_ticket_hypothesis=False)
    _fit(model, pruning, recorder)
    # each amount applies to the entries still unpruned: 50%, then 75%, then unchanged
    assert recorder.sparsity == [0.5, 0.75, 0.75]
    assert hasattr(model.layer1, "weight_mask")


def test_make_pruning_permanent_removes_the_masks_and_keeps_the_zeros():
    model = Model()
    _fit(model, ModelPruning("l1_unstructured", parameter_names=["weight"], amount=0.5), max_epochs=1)
    for layer in (model.layer1, model.layer2):
        assert not hasattr(layer, "weight_mask") and not hasattr(layer, "weight_orig")
        assert isinstance(layer.weight, nn.Parameter)
        assert not layer._forward_pre_hooks
    assert _sparsity(model) == 0.5


def test_int_amount_prunes_that_many_entries_per_layer():
    model = Model()
    _fit(model, ModelPruning("random_unstructured", parameter_names=["weight"], amount=10,
                             use_global_unstructured=False, use_lottery_ticket_hypothesis=False), max_epochs=1)
    assert int((model.layer1.weight == 0).sum()) == 10 and int((model.layer2.weight == 0).sum()) == 10


def test_structured_pruning_zeroes_whole_rows():
    model = Model()
    _fit(model, ModelPruning("ln_structured", parameters_to_prune=[(model.layer1, "weight")], amount=0.25,
                             pruning_dim=0, pruning_norm=2, use_global_unstructured=False,
                             use_lottery_ticket_hypothesis=False), max_epochs=1)
    zero_rows = (model.layer1.weight == 0).all(dim=1)
    assert int(zero_rows.sum()) == 4


def test_lottery_ticket_resets_the_unpruned_weights_to_their_initial_values():
    model = Model()
    initial = model.layer1.weight.detach().clone()

    class AfterPruning(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            self.weight = pl_module.layer1.weight_orig.detach() * pl_module.layer1.weight_mask

    recorder = AfterPruning()
    _fit(model, ModelPruning("l1_unstructured", parameters_to_prune=[(model.layer1, "weight")], amount=0.5,
                             make_pruning_permanent=False), recorder, max_epochs=1)
    mask = model.layer1.weight_mask.bool()
    assert torch.equal(recorder.weight[mask], initial[mask])
    assert (recorder.weight[~mask] == 0).all()


def test_resample_parameters_resets_the_unpruned_weights_to_fresh_random_values():
    model = Model()
    initial = model.layer1.weight.detach().clone()
    torch.manual_seed(123)
    _fit(model, ModelPruning("l1_unstructured", parameters_to_prune=[(model.layer1, "weight")], amount=0.5,
                             resample_parameters=True), max_epochs=1)
    weight = model.layer1.weight.detach()
    kept = weight != 0
    assert int(kept.sum()) == 64
    assert not torch.isclose(weight[kept], initial[kept]).any()
    # still the layer's initialization distribution: bounded by 1/sqrt(fan_in)
    assert weight.abs().max() <= 1 / 8**0.5


def test_a_pruning_method_class_works_with_global_pruning():
    from torch.nn.utils import prune

    model = Model()
    _fit(model, ModelPruning(prune.L1Unstructured, parameter_names=["weight"], amount=0.25,
                             use_lottery_ticket_hypothesis=False), max_epochs=1)
    assert _sparsity(model) == 0.25


def test_checkpoint_holds_plain_weights_that_load_into_an_unpruned_model(tmp_path):
    class SaveAtEnd(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.save_checkpoint(tmp_path / "pruned.ckpt")

    model = Model()
    pruning = ModelPruning("l1_unstructured", parameter_names=["weight"], amount=0.5, make_pruning_permanent=False)
    _fit(model, pruning, SaveAtEnd(), max_epochs=1)
    checkpoint = torch.load(tmp_path / "pruned.ckpt", weights_only=True)
    assert not any(k.endswith(("_mask", "_orig")) for k in checkpoint["state_dict"])
    plain = Model()
    plain.load_state_dict(checkpoint["state_dict"])
    torch.testing.assert_close(plain.layer1.weight, model.layer1.weight)
    masks = checkpoint["callbacks"][pruning.state_key]["masks"]
    assert len(masks) == 2 and int((masks[0] == 0).sum()) + int((masks[1] == 0).sum()) == (128 + 16) // 2


@pytest.mark.parametrize(("args", "match"), [
    ({"pruning_fn": "l3_unstructured"}, "isn't available"),
    ({"pruning_fn": "ln_structured", "use_global_unstructured": False}, "pruning_dim"),
    ({"pruning_fn": "ln_structured", "pruning_dim": 0, "use_global_unstructured": False}, "pruning_norm"),
    ({"pruning_fn": "random_structured", "pruning_dim": 0}, "unstructured"),
    ({"pruning_fn": "l1_unstructured", "amount": "half"}, "amount"),
    ({"pruning_fn": "l1_unstructured", "parameter_names": ["gamma"]}, "parameter_names"),
    ({"pruning_fn": "l1_unstructured", "verbose": 3}, "verbose"),
])
def test_invalid_arguments_are_rejected(args, match):
    with pytest.raises(MisconfigurationException, match=match):
        ModelPruning(**args)


def test_two_pruning_callbacks_keep_their_states_apart_and_log_the_pruned_entries(tmp_path, caplog):
    # one prunes on even epochs, the other on odd ones; each logs the entries its masks cover
    model = Model()
    targets = [(model.layer1, "weight"), (model.layer2, "weight")]
    even = ModelPruning("l1_unstructured", parameters_to_prune=targets, amount=0.5, verbose=1,
                        apply_pruning=lambda epoch: epoch % 2 == 0, make_pruning_permanent=False)
    odd = ModelPruning("random_unstructured", parameters_to_prune=targets, amount=0.25, verbose=1,
                       apply_pruning=lambda epoch: epoch % 2 == 1, make_pruning_permanent=False)
    assert even.state_key != odd.state_key
    with caplog.at_level(logging.INFO, logger="torchbolt.callbacks.pruning"):
        trainer = _fit(model, even, odd, max_epochs=2)
    applied = [m for m in caplog.messages if m.startswith("Applied")]
    assert len(applied) == 2 and all("/144 (" in m for m in applied), applied  # 128 + 16 weights
    trainer.save_checkpoint(tmp_path / "both.ckpt")
    states = torch.load(tmp_path / "both.ckpt", weights_only=True)["callbacks"]
    assert len(states[even.state_key]["masks"]) == 2 and len(states[odd.state_key]["masks"]) == 2


def test_parameter_names_select_parameters_only():
    class WithFlag(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3, 3))
            self.bias = True  # an attribute with a parameter's name, not a parameter

    model = Model()
    model.extra = WithFlag()
    pairs = ModelPruning.sanitize_parameters_to_prune(model, (), parameter_names=["weight", "bias"])
    assert (model.extra, "weight") in pairs and (model.extra, "bias") not in pairs
    assert all(isinstance(getattr(m, name), nn.Parameter) for m, name in pairs)


def test_a_checkpoint_keyed_by_the_class_name_still_restores_the_masks(tmp_path):
    # files written before the key depended on the arguments hold the state under "ModelPruning"
    model = Model()
    pruning = ModelPruning("l1_unstructured", parameter_names=["weight"], amount=0.5, make_pruning_permanent=False)
    trainer = _fit(model, pruning, max_epochs=1)
    trainer.save_checkpoint(tmp_path / "new.ckpt")
    checkpoint = torch.load(tmp_path / "new.ckpt", weights_only=True)
    checkpoint["callbacks"] = {"ModelPruning": checkpoint["callbacks"].pop(pruning.state_key)}
    torch.save(checkpoint, tmp_path / "old.ckpt")

    resumed = Model()
    again = ModelPruning("l1_unstructured", parameter_names=["weight"], amount=0.5, make_pruning_permanent=False,
                         apply_pruning=False)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, callbacks=[again])
    trainer.fit(resumed, ckpt_path=tmp_path / "old.ckpt")
    torch.testing.assert_close(resumed.layer1.weight_mask, model.layer1.weight_mask)
