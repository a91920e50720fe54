"""Names Lightning users import, at Lightning's paths, behaving as Lightning documents them."""

from __future__ import annotations

import warnings
from argparse import Namespace
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import torchbolt as pl
from torchbolt.core.saving import (
    CHECKPOINT_PAST_HPARAMS_KEYS,
    convert,
    load_hparams_from_tags_csv,
    save_hparams_to_tags_csv,
    update_hparams,
)
from torchbolt.demos.boring_classes import BoringModel, RandomDataset
from torchbolt.strategies.single_device import SingleDeviceStrategy
from torchbolt.utilities import (
    GradClipAlgorithmType,
    LightningEnum,
    disable_possible_user_warnings,
    find_shared_parameters,
    is_picklable,
    is_shared_filesystem,
    set_shared_parameters,
    suggested_max_num_workers,
)
from torchbolt.utilities.data import has_iterable_dataset, has_len_all_ranks
from torchbolt.utilities.memory import recursive_detach
from torchbolt.utilities.model_helpers import is_overridden
from torchbolt.utilities.parsing import (
    clean_namespace,
    collect_init_args,
    get_init_args,
    parse_class_init_keys,
    save_hyperparameters,
)
from torchbolt.utilities.signature_utils import is_param_in_hook_signature
from torchbolt.utilities.warnings import PossibleUserWarning


def test_enums_compare_case_insensitively_and_parse_from_strings() -> None:
    assert GradClipAlgorithmType.NORM == "norm" == GradClipAlgorithmType("norm")
    assert GradClipAlgorithmType.VALUE == "VALUE"
    assert GradClipAlgorithmType.NORM != "value"
    assert {GradClipAlgorithmType.NORM: 1}.get("norm") == 1
    assert GradClipAlgorithmType.from_str("Norm") is GradClipAlgorithmType.NORM
    assert GradClipAlgorithmType.from_str("value", source="value") is GradClipAlgorithmType.VALUE
    assert issubclass(GradClipAlgorithmType, LightningEnum)
    with pytest.raises(ValueError, match="not a GradClipAlgorithmType"):
        GradClipAlgorithmType.from_str("clip")
    assert f"{GradClipAlgorithmType.NORM}" == "norm"


def test_a_trainer_accepts_the_enum_for_the_clipping_algorithm() -> None:
    trainer = pl.Trainer(gradient_clip_val=0.5, gradient_clip_algorithm=GradClipAlgorithmType.VALUE,
                         max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(BoringModel())
    assert trainer.global_step == 2


def test_is_overridden_at_the_model_helpers_path() -> None:
    class WithStep(BoringModel):
        def on_train_start(self) -> None:
            pass

    assert is_overridden("on_train_start", WithStep())
    assert not is_overridden("on_train_end", WithStep())


def test_is_param_in_hook_signature() -> None:
    def named(batch, batch_idx, dataloader_idx=0):  # type: ignore[no-untyped-def]
        pass

    def varargs(*args):  # type: ignore[no-untyped-def]
        pass

    def two(batch, batch_idx):  # type: ignore[no-untyped-def]
        pass

    assert is_param_in_hook_signature(named, "dataloader_idx")
    assert is_param_in_hook_signature(varargs, "dataloader_idx")
    assert not is_param_in_hook_signature(varargs, "dataloader_idx", explicit=True)
    assert not is_param_in_hook_signature(two, "dataloader_idx")
    assert is_param_in_hook_signature(two, "dataloader_idx", min_args=2)


def test_has_len_all_ranks_on_one_process() -> None:
    strategy = SingleDeviceStrategy(device=torch.device("cpu"))
    assert has_len_all_ranks(DataLoader(RandomDataset(4, 8)), strategy)
    from torchbolt.demos.boring_classes import RandomIterableDataset

    assert not has_len_all_ranks(DataLoader(RandomIterableDataset(4, 8)), strategy)
    with pytest.warns(UserWarning, match="across ranks is zero"):
        assert has_len_all_ranks(DataLoader(RandomDataset(4, 0)), strategy)


def test_has_iterable_dataset_and_suggested_workers() -> None:
    from torchbolt.demos.boring_classes import RandomIterableDataset

    assert has_iterable_dataset(DataLoader(RandomIterableDataset(4, 8)))
    assert not has_iterable_dataset(DataLoader(RandomDataset(4, 8)))
    assert suggested_max_num_workers(1) >= 1
    assert suggested_max_num_workers(10_000) == 1
    with pytest.raises(ValueError, match="local_world_size"):
        suggested_max_num_workers(0)


def test_is_shared_filesystem_is_true_for_one_process() -> None:
    assert is_shared_filesystem(SingleDeviceStrategy(device=torch.device("cpu")))


def test_shared_parameters_are_found_and_retied() -> None:
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    model[1].weight = model[0].weight
    groups = find_shared_parameters(model)
    assert groups == [["0.weight", "1.weight"]]
    model[1].weight = nn.Parameter(model[0].weight.detach().clone())  # untied, e.g. by a copy
    assert find_shared_parameters(model) == []
    set_shared_parameters(model, groups)
    assert model[1].weight is model[0].weight


def test_recursive_detach_keeps_structure() -> None:
    x = torch.ones(2, requires_grad=True) * 2
    out = recursive_detach({"a": x, "b": [x, 3], "c": "text"}, to_cpu=True)
    assert not out["a"].requires_grad and not out["b"][0].requires_grad
    assert out["b"][1] == 3 and out["c"] == "text"


def test_parsing_helpers() -> None:
    assert is_picklable({"a": 1}) and not is_picklable(lambda: 1)
    hparams = {"lr": 0.1, "fn": lambda: 1}
    clean_namespace(hparams)
    assert hparams == {"lr": 0.1}
    ns = Namespace(lr=0.1, fn=lambda: 1)
    clean_namespace(ns)
    assert vars(ns) == {"lr": 0.1}

    class Model:
        def __init__(me, a: int, *rest: int, b: int = 2, **extra: int) -> None:
            import inspect

            frame = inspect.currentframe()
            assert frame is not None
            me.found = get_init_args(frame)
            me.chain = collect_init_args(frame, [])

    assert parse_class_init_keys(Model) == ("me", "rest", "extra")
    m = Model(1, 5, b=3, c=4)
    assert m.found == {"a": 1, "rest": (5,), "b": 3, "c": 4}
    assert m.chain == [m.found]


def test_save_hyperparameters_function() -> None:
    class Model(pl.LightningModule):
        def __init__(self, lr: float = 0.1, width: int = 8) -> None:
            super().__init__()
            save_hyperparameters(self, ignore="width")

    assert dict(Model(lr=0.5).hparams) == {"lr": 0.5}
    model = pl.LightningModule()
    save_hyperparameters(model, given_hparams={"a": 1, "b": 2}, ignore=["b"])
    assert dict(model.hparams) == {"a": 1}


def test_disable_possible_user_warnings() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        disable_possible_user_warnings()
        warnings.warn("hint", PossibleUserWarning, stacklevel=1)
        warnings.warn("other", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["other"]


def test_tags_csv_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "tags.csv"
    save_hparams_to_tags_csv(path, Namespace(lr=0.01, layers=3, name="net", flag=True))
    assert path.read_text().splitlines()[0] == "key,value"
    assert load_hparams_from_tags_csv(path) == {"lr": 0.01, "layers": 3, "name": "net", "flag": True}
    with pytest.warns(RuntimeWarning, match="Missing Tags"):
        assert load_hparams_from_tags_csv(tmp_path / "absent.csv") == {}
    with pytest.raises(RuntimeError, match="Missing folder"):
        save_hparams_to_tags_csv(tmp_path / "no" / "tags.csv", {"a": 1})


def test_convert_and_update_hparams() -> None:
    assert convert("TRUE") is True and convert("false") is False
    assert convert("3") == 3 and convert("0.5") == 0.5 and convert("x") == "x"
    hparams = {"opt": {"lr": 0.1, "momentum": 0.9}, "layers": 2}
    update_hparams(hparams, {"opt": {"lr": 0.01}, "new": 1})
    assert hparams == {"opt": {"lr": 0.01, "momentum": 0.9}, "layers": 2, "new": 1}


def test_checkpoint_with_a_past_hparams_key_loads(tmp_path: Path) -> None:
    class Model(BoringModel):
        def __init__(self, width: int = 2) -> None:
            super().__init__()
            self.save_hyperparameters()

    checkpoint = {"state_dict": Model().state_dict(), CHECKPOINT_PAST_HPARAMS_KEYS[0]: {"width": 7}}
    torch.save(checkpoint, tmp_path / "old.ckpt")
    assert Model.load_from_checkpoint(tmp_path / "old.ckpt").hparams.width == 7


def test_top_level_logo_and_trainer_seed(capsys: pytest.CaptureFixture[str]) -> None:
    pl.cli_lightning_logo()
    assert "torchbolt" in capsys.readouterr().out
    from torchbolt.trainer import seed_everything

    assert seed_everything(3) == 3


def test_merge_dicts() -> None:
    from torchbolt.loggers.logger import merge_dicts

    merged = merge_dicts(
        [{"a": 1.0, "b": 2.0, "n": {"x": 1.0}}, {"a": 3.0, "b": 4.0, "n": {"x": 3.0}, "s": "text"}],
        agg_key_funcs={"b": max},
    )
    assert merged == {"a": 2.0, "b": 4.0, "n": {"x": 2.0}}


def test_small_names() -> None:
    from torchbolt.accelerators.cpu import get_cpu_stats
    from torchbolt.callbacks.timer import Interval, Timer
    from torchbolt.core.optimizer import do_nothing_closure

    assert do_nothing_closure() is None
    assert Interval.step == "step" and Interval("epoch") is Interval.epoch
    assert Timer(duration="00:00:01:00", interval=Interval.epoch) is not None
    stats = get_cpu_stats()
    assert stats == {} or set(stats) == {"cpu_percent", "cpu_vm_percent", "cpu_swap_percent"}
