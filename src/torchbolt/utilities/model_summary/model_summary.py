"""A table of a LightningModule's layers and parameter counts (what ``ModelSummary`` prints)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

UNKNOWN_SIZE = "?"
#: unit suffixes of parameter counts: ones, thousands, millions, billions, trillions
PARAMETER_NUM_UNITS = [" ", "K", "M", "B", "T"]
#: the row label for parameters that belong to no listed layer, and the filler of its other columns
LEFTOVER_PARAMS_NAME = "other params"
NOT_APPLICABLE = "n/a"


def _param_count(module: nn.Module, trainable: bool | None = None) -> int:
    # a parameter partitioned by DeepSpeed ZeRO stage 3 is empty on each process; `ds_numel` is its full size
    return sum(
        getattr(p, "ds_numel", None) or p.numel()
        for p in module.parameters()
        if not isinstance(p, nn.parameter.UninitializedParameter) and (trainable is None or p.requires_grad == trainable)
    )


def _shape_of(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return list(value.shape)
    if isinstance(value, (list, tuple)):
        return [_shape_of(v) for v in value]
    if isinstance(value, dict):
        return {k: _shape_of(v) for k, v in value.items()}
    return UNKNOWN_SIZE


class LayerSummary:
    """Parameter count, mode and (after a forward pass) input/output shapes of one submodule."""

    def __init__(self, module: nn.Module) -> None:
        self._module = module
        self.in_size: Any = UNKNOWN_SIZE
        self.out_size: Any = UNKNOWN_SIZE
        self._hook = module.register_forward_hook(self._record, with_kwargs=False)

    def _record(self, module: nn.Module, inp: Any, out: Any) -> None:
        if len(inp) == 1:
            inp = inp[0]
        self.in_size = _shape_of(inp)
        self.out_size = _shape_of(out)
        self.detach_hook()

    def detach_hook(self) -> None:
        self._hook.remove()

    @property
    def layer_type(self) -> str:
        return type(self._module).__name__

    @property
    def num_parameters(self) -> int:
        return _param_count(self._module)

    @property
    def training(self) -> bool:
        return self._module.training


class ModelSummary:
    """Summarize a module's children up to ``max_depth`` levels (``-1``: all levels, ``0``: none).

    Example::

        print(ModelSummary(model, max_depth=1))
    """

    def __init__(self, model: nn.Module, max_depth: int = 1) -> None:
        if not isinstance(max_depth, int) or max_depth < -1:
            raise ValueError(f"`max_depth` can be -1, 0 or > 0, got {max_depth}.")
        self._model = model
        self._max_depth = max_depth
        self._layer_summary = self._summarize()
        self._precision_bytes = self._bytes_per_param()

    def _bytes_per_param(self) -> float:
        params = [p for p in self._model.parameters() if not isinstance(p, nn.parameter.UninitializedParameter)]
        if not params:
            return 4.0
        return sum(p.element_size() * p.numel() for p in params) / max(1, sum(p.numel() for p in params))

    def _named_modules(self) -> list[tuple[str, nn.Module]]:
        if self._max_depth == 0:
            return []
        mods = list(self._model.named_modules())[1:]
        if self._max_depth > 0:
            mods = [(name, m) for name, m in mods if name.count(".") < self._max_depth]
        return mods

    def _summarize(self) -> OrderedDict[str, LayerSummary]:
        summary = OrderedDict((name, LayerSummary(m)) for name, m in self._named_modules())
        example = getattr(self._model, "example_input_array", None)
        if example is not None and summary:
            self._forward_example(example)
        for layer in summary.values():
            layer.detach_hook()
        return summary

    def _forward_example(self, example: Any) -> None:
        from torchbolt.utilities.apply_func import move_data_to_device

        model = self._model
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
        example = move_data_to_device(example, device)
        mode = {name: m.training for name, m in model.named_modules()}
        model.eval()
        try:
            with torch.no_grad():
                if isinstance(example, (list, tuple)):
                    model(*example)
                elif isinstance(example, dict):
                    model(**example)
                else:
                    model(example)
        finally:
            for name, m in model.named_modules():
                m.training = mode[name]

    @property
    def layer_names(self) -> list[str]:
        return list(self._layer_summary.keys())

    @property
    def layer_types(self) -> list[str]:
        return [layer.layer_type for layer in self._layer_summary.values()]

    @property
    def param_nums(self) -> list[int]:
        return [layer.num_parameters for layer in self._layer_summary.values()]

    @property
    def in_sizes(self) -> list[Any]:
        return [layer.in_size for layer in self._layer_summary.values()]

    @property
    def out_sizes(self) -> list[Any]:
        return [layer.out_size for layer in self._layer_summary.values()]

    @property
    def total_parameters(self) -> int:
        return _param_count(self._model)

    @property
    def trainable_parameters(self) -> int:
        return _param_count(self._model, trainable=True)

    @property
    def total_training_modes(self) -> dict[str, int]:
        modes = [m.training for m in self._model.modules()][1:]
        return {"train": sum(modes), "eval": len(modes) - sum(modes)}

    @property
    def model_size(self) -> float:
        """Estimated size of the parameters in MB."""
        return self.total_parameters * self._precision_bytes / 1e6

    def _table_columns(self) -> list[tuple[str, list[str]]]:
        layers = list(self._layer_summary.values())
        cols = [
            (" ", [str(i) for i in range(len(layers))]),
            ("Name", self.layer_names),
            ("Type", self.layer_types),
            ("Params", [get_human_readable_count(n) for n in self.param_nums]),
            ("Mode", ["train" if layer.training else "eval" for layer in layers]),
        ]
        if getattr(self._model, "example_input_array", None) is not None:
            cols.append(("In sizes", [str(s) for s in self.in_sizes]))
            cols.append(("Out sizes", [str(s) for s in self.out_sizes]))
        return cols

    def __str__(self) -> str:
        lines: list[str] = []
        cols = self._table_columns()
        if self._layer_summary:
            widths = [max(len(header), *(len(v) for v in values)) for header, values in cols]
            header = " | ".join(h.ljust(w) for (h, _), w in zip(cols, widths))
            lines.append(header)
            lines.append("-" * len(header))
            for i in range(len(self._layer_summary)):
                lines.append(" | ".join(values[i].ljust(w) for (_, values), w in zip(cols, widths)))
            lines.append("-" * len(header))
        trainable = self.trainable_parameters
        total = self.total_parameters
        modes = self.total_training_modes
        rows = [
            (get_human_readable_count(trainable), "Trainable params"),
            (get_human_readable_count(total - trainable), "Non-trainable params"),
            (get_human_readable_count(total), "Total params"),
            (get_formatted_model_size(self.model_size), "Total estimated model params size (MB)"),
            (str(modes["train"]), "Modules in train mode"),
            (str(modes["eval"]), "Modules in eval mode"),
        ]
        lines.extend(f"{value:<10}{label}" for value, label in rows)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)


def summarize(model: nn.Module, max_depth: int = 1) -> ModelSummary:
    """Build the :class:`ModelSummary` of ``model``."""
    return ModelSummary(model, max_depth=max_depth)


def parse_batch_shape(batch: Any) -> Any:
    """The shape of ``batch`` as a list (nested lists for a list/tuple of tensors); ``"?"`` when it has none."""
    if hasattr(batch, "shape"):
        return list(batch.shape)
    if isinstance(batch, (list, tuple)):
        return [parse_batch_shape(item) for item in batch]
    return UNKNOWN_SIZE


def get_formatted_model_size(total_model_size: float) -> str:
    """A model size in MB as the summary prints it: thousands separators, three decimals (``"1,234.568"``)."""
    return f"{total_model_size:,.3f}"


def get_human_readable_count(number: int) -> str:
    """``123`` -> ``"123"``, ``1234`` -> ``"1.2 K"``, ``2e6`` -> ``"2.0 M"``."""
    if number < 0:
        raise ValueError("number must be non-negative")
    labels = PARAMETER_NUM_UNITS
    index = 0
    value = float(number)
    while value >= 1000 and index < len(labels) - 1:
        value /= 1000
        index += 1
    if index == 0:
        return f"{int(value):,d}"
    return f"{value:,.1f} {labels[index]}"
