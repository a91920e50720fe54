"""A table of a LightningModule's layers, parameter counts, modes and FLOPs (what ``ModelSummary`` prints).

The table's columns are ``(header, cells)`` pairs of strings (see :meth:`ModelSummary._get_summary_data`), so a
custom ``ModelSummary`` callback or the rich variant can lay them out differently. Shapes and FLOPs are known only
when the module defines ``example_input_array``: the summary then runs one forward pass in ``eval`` mode under
``torch.no_grad`` and restores every submodule's mode afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

log = logging.getLogger(__name__)

#: Shown for a shape that could not be recorded (no example input, a scripted module, a non-tensor value).
UNKNOWN_SIZE = "?"
#: The row name for parameters registered directly on the root module (not inside any listed layer).
LEFTOVER_PARAMS_NAME = "other params"
#: The cell for a column that does not apply to a row.
NOT_APPLICABLE = "n/a"
#: Suffixes of :func:`get_human_readable_count`: units, thousands, millions, billions, trillions.
PARAMETER_NUM_UNITS = [" ", "K", "M", "B", "T"]

# Bits per parameter assumed for the size estimate, by ``Trainer(precision=...)``; mixed precision keeps
# its parameters in the full type, so the "-mixed" flavours count as 32 bits.
_PRECISION_BITS = {
    "64": 64,
    "32": 32,
    "16": 16,
    "bf16": 16,
    "16-true": 16,
    "bf16-true": 16,
    "32-true": 32,
    "64-true": 64,
}

_warned_uninitialized = False


def _is_dtensor(tensor: Tensor) -> bool:
    """Whether ``tensor`` is a ``DTensor`` (its shape is known even though it subclasses an uninitialized type)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - builds without distributed support
        return False
    return isinstance(tensor, DTensor)


def _tensor_has_shape(p: Tensor) -> bool:
    """True for a lazy (uninitialized) parameter, whose element count is not known yet; warns once per process."""
    global _warned_uninitialized
    if isinstance(p, nn.parameter.UninitializedParameter) and not _is_dtensor(p):
        if not _warned_uninitialized:
            _warned_uninitialized = True
            warnings.warn(
                "The total number of parameters detected may be inaccurate because the model contains an"
                " `UninitializedParameter` (a lazy layer). Set `example_input_array` on your LightningModule so the"
                " summary's forward pass materializes it.",
                UserWarning,
                stacklevel=3,
            )
        return True
    return False


def _count(params: Any) -> int:
    return sum(0 if _tensor_has_shape(p) else p.numel() for p in params)


def parse_batch_shape(batch: Any) -> str | list:
    """The shape of a tensor as a list, of a list/tuple as a list of shapes, of anything else :data:`UNKNOWN_SIZE`."""
    if hasattr(batch, "shape"):
        return list(batch.shape)
    if isinstance(batch, (list, tuple)):
        return [parse_batch_shape(item) for item in batch]
    return UNKNOWN_SIZE


class LayerSummary:
    """Parameter count, mode and (after the first forward pass) input/output shapes of one submodule.

    A forward hook records the shapes once and then removes itself, so a module called several times (a shared
    or recursive layer) reports its first call. Scripted modules get no hook; their shapes stay unknown.
    """

    def __init__(self, module: nn.Module) -> None:
        self._module = module
        self._in_size: str | list | None = None
        self._out_size: str | list | None = None
        self._hook_handle: RemovableHandle | None = None
        if not isinstance(module, torch.jit.ScriptModule):
            self._hook_handle = module.register_forward_hook(self._record, with_kwargs=True)

    def __del__(self) -> None:
        self.detach_hook()

    def _record(self, _: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
        inputs = (*args, *kwargs.values()) if kwargs else tuple(args)
        self._in_size = parse_batch_shape(inputs[0] if len(inputs) == 1 else inputs)
        self._out_size = parse_batch_shape(out)
        self.detach_hook()

    def detach_hook(self) -> None:
        """Remove the shape hook if the forward pass has not removed it already (safe to call twice)."""
        handle = getattr(self, "_hook_handle", None)
        if handle is not None:
            handle.remove()

    # an empty shape (no inputs, a 0-d tensor) shows as unknown too: there is nothing to print

    @property
    def in_size(self) -> str | list:
        return self._in_size or UNKNOWN_SIZE

    @property
    def out_size(self) -> str | list:
        return self._out_size or UNKNOWN_SIZE

    @property
    def layer_type(self) -> str:
        """The class name of the module."""
        return type(self._module).__name__

    @property
    def num_parameters(self) -> int:
        """Elements of the module's parameters (lazy parameters count 0)."""
        return _count(self._module.parameters())

    @property
    def training(self) -> bool:
        return self._module.training


class ModelSummary:
    """Summarize a module's submodules up to ``max_depth`` levels (``-1``: all levels, ``0``: only the totals).

    Example::

        print(ModelSummary(model, max_depth=1))

    The size estimate counts every parameter at the bit width of the attached Trainer's ``precision``
    (32 bits without a Trainer, and for a precision it does not know, with a warning).

    Raises:
        ValueError: when ``max_depth`` is not ``-1``, ``0`` or a positive int.
    """

    #: the summary of one layer (a subclass may count parameters differently)
    _layer_class: type[LayerSummary] = LayerSummary

    def __init__(self, model: nn.Module, max_depth: int = 1) -> None:
        if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < -1:
            raise ValueError(f"`max_depth` can be -1, 0 or > 0, got {max_depth}.")
        from torch.utils.flop_counter import FlopCounterMode  # imported here: costly, and only a summary needs it

        self._model = model
        self._max_depth = max_depth
        # the root module is depth 0 for the counter, so one more level than the table shows
        self._flop_counter = FlopCounterMode(display=False, depth=max_depth + 1)
        self._layer_summary = self.summarize()
        bits = 32
        trainer = getattr(model, "_trainer", None)
        if trainer is not None:
            precision = str(trainer.precision)
            if precision not in _PRECISION_BITS:
                warnings.warn(
                    f"Precision {precision} is not supported by the model summary. Estimated model size in MB will"
                    " not be accurate. Using 32 bits instead.",
                    UserWarning,
                    stacklevel=2,
                )
            bits = _PRECISION_BITS.get(precision, 32)
        self._precision_megabytes = bits / 8 * 1e-6

    @property
    def max_depth(self) -> int:
        return self._max_depth

    @property
    def named_modules(self) -> list[tuple[str, nn.Module]]:
        """The ``(name, module)`` pairs hooked for the summary (the root module excluded)."""
        if self._max_depth == 0:
            return []
        if self._max_depth == 1:
            return list(self._model.named_children())
        return list(self._model.named_modules())[1:]

    @property
    def layer_names(self) -> list[str]:
        return list(self._layer_summary.keys())

    @property
    def layer_types(self) -> list[str]:
        return [layer.layer_type for layer in self._layer_summary.values()]

    @property
    def in_sizes(self) -> list:
        return [layer.in_size for layer in self._layer_summary.values()]

    @property
    def out_sizes(self) -> list:
        return [layer.out_size for layer in self._layer_summary.values()]

    @property
    def param_nums(self) -> list[int]:
        return [layer.num_parameters for layer in self._layer_summary.values()]

    @property
    def training_modes(self) -> list[bool]:
        return [layer.training for layer in self._layer_summary.values()]

    @property
    def total_training_modes(self) -> dict[str, int]:
        """How many submodules (all depths, root excluded) are in train and in eval mode right now."""
        modes = [m.training for m in self._model.modules()][1:]
        return {"train": modes.count(True), "eval": modes.count(False)}

    @property
    def total_parameters(self) -> int:
        return _count(self._model.parameters())

    @property
    def trainable_parameters(self) -> int:
        return _count(p for p in self._model.parameters() if p.requires_grad)

    @property
    def total_layer_params(self) -> int:
        """Parameters inside the listed layers (the rest live directly on the root module)."""
        return sum(self.param_nums)

    @property
    def model_size(self) -> float:
        """Estimated size of the parameters in MB."""
        return self.total_parameters * self._precision_megabytes

    @property
    def total_flops(self) -> int:
        """FLOPs of the example forward pass (0 without ``example_input_array``)."""
        return int(self._flop_counter.get_total_flops())

    @property
    def flop_counts(self) -> dict[str, dict[Any, int]]:
        """Per listed layer, the FLOPs of each operator it ran in the example forward pass."""
        counts = self._flop_counter.get_flop_counts()
        prefix = type(self._model).__name__
        return {name: dict(counts.get(f"{prefix}.{name}", {})) for name in self.layer_names}

    def summarize(self) -> dict[str, LayerSummary]:
        """Hook the submodules, run the example input (if any) and return the layers to list, by name."""
        summary = OrderedDict((name, self._layer_class(module)) for name, module in self.named_modules)
        if getattr(self._model, "example_input_array", None) is not None:
            self._forward_example_input()
        for layer in summary.values():
            layer.detach_hook()
        if self._max_depth >= 1:
            for name in [name for name in summary if name.count(".") >= self._max_depth]:
                del summary[name]
        return summary

    def _forward_example_input(self) -> None:
        """One forward pass of ``example_input_array`` (moved like a batch) in eval mode; modes restored after."""
        model = self._model
        trainer = getattr(model, "_trainer", None)
        batch = self._prepare_example(model.example_input_array)
        modes = {module: module.training for module in model.modules()}
        model.eval()
        forward_context: Any = contextlib.nullcontext()
        if trainer is not None:
            forward_context = trainer.precision_plugin.forward_context()
        try:
            with torch.no_grad(), forward_context, self._flop_counter:
                if isinstance(batch, (list, tuple)):
                    model(*batch)
                elif isinstance(batch, dict):
                    model(**batch)
                else:
                    model(batch)
        finally:
            for module, training in modes.items():
                module.training = training

    def _prepare_example(self, batch: Any) -> Any:
        from torchbolt.utilities.apply_func import move_data_to_device

        model: Any = self._model  # its batch-transfer hooks are looked up by name below
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
        hooks = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")
        if not all(callable(getattr(model, name, None)) for name in hooks):
            return move_data_to_device(batch, device)
        # the same path a real batch takes, so a model that reshapes its batch in these hooks still summarizes
        batch = model.on_before_batch_transfer(batch, 0)
        batch = model.transfer_batch_to_device(batch, device, 0)
        return model.on_after_batch_transfer(batch, 0)

    def _get_summary_data(self) -> list[tuple[str, list[str]]]:
        """The table's columns as ``(header, cells)``; every cell is a string.

        Columns: index, Name, Type, Params, Mode, FLOPs, and with an example input, In sizes and Out sizes. A last
        row, :data:`LEFTOVER_PARAMS_NAME`, counts parameters that belong to none of the listed layers.
        """
        flops = [get_human_readable_count(sum(per_op.values())) for per_op in self.flop_counts.values()]
        columns: list[tuple[str, list[str]]] = [
            (" ", [str(i) for i in range(len(self._layer_summary))]),
            ("Name", self.layer_names),
            ("Type", self.layer_types),
            ("Params", [get_human_readable_count(n) for n in self.param_nums]),
            ("Mode", ["train" if training else "eval" for training in self.training_modes]),
            ("FLOPs", flops),
        ]
        if getattr(self._model, "example_input_array", None) is not None:
            columns.append(("In sizes", [str(size) for size in self.in_sizes]))
            columns.append(("Out sizes", [str(size) for size in self.out_sizes]))
        leftover = self.total_parameters - self.total_layer_params
        if leftover > 0:
            extra = {" ": " ", "Name": LEFTOVER_PARAMS_NAME, "Params": get_human_readable_count(leftover)}
            for header, cells in columns:
                cells.append(extra.get(header, NOT_APPLICABLE))
        return columns

    def __str__(self) -> str:
        return _format_summary_table(
            self.total_parameters,
            self.trainable_parameters,
            self.model_size,
            self.total_training_modes,
            self.total_flops,
            *self._get_summary_data(),
        )

    def __repr__(self) -> str:
        return str(self)


def _format_summary_table(
    total_parameters: int,
    trainable_parameters: int,
    model_size: float,
    total_training_modes: dict[str, int],
    total_flops: int,
    *cols: tuple[str, list[str]],
) -> str:
    """Lay the columns out as a fixed-width text table followed by the totals."""
    n_rows = len(cols[0][1]) if cols else 0
    widths = [max([len(header), *(len(str(cell)) for cell in cells)]) for header, cells in cols]
    rule = "-" * (sum(widths) + 3 * (len(cols) + 1))
    lines = [" | ".join(header.ljust(w) for (header, _), w in zip(cols, widths)), rule]
    lines.extend(" | ".join(str(cells[i]).ljust(w) for (_, cells), w in zip(cols, widths)) for i in range(n_rows))
    lines.append(rule)
    totals = [
        (get_human_readable_count(trainable_parameters), "Trainable params"),
        (get_human_readable_count(total_parameters - trainable_parameters), "Non-trainable params"),
        (get_human_readable_count(total_parameters), "Total params"),
        (get_formatted_model_size(model_size), "Total estimated model params size (MB)"),
        (str(total_training_modes["train"]), "Modules in train mode"),
        (str(total_training_modes["eval"]), "Modules in eval mode"),
        (get_human_readable_count(total_flops), "Total Flops"),
    ]
    lines.extend(f"{value:<10}{label}" for value, label in totals)
    return "\n".join(lines)


def get_formatted_model_size(total_model_size: float) -> str:
    """``5500.0`` -> ``"5,500.000"`` (MB, three decimals)."""
    return f"{total_model_size:,.3f}"


def get_human_readable_count(number: int | float) -> str:
    """Abbreviate a count with K/M/B/T, keeping a unit column so numbers line up.

    ``123`` -> ``"123  "``, ``1234`` -> ``"1.2 K"``, ``2e6`` -> ``"2.0 M"``, ``4e14`` -> ``"400 T"``,
    ``5e15`` -> ``"5,000 T"`` (never beyond trillions).

    Raises:
        ValueError: for a negative number.
    """
    if number < 0:
        raise ValueError(f"`get_human_readable_count` needs a non-negative number, got {number}.")
    digits = math.floor(math.log10(number)) + 1 if number > 0 else 1
    group = min(math.ceil(digits / 3), len(PARAMETER_NUM_UNITS)) - 1
    scaled = number / 10 ** (3 * group)
    unit = PARAMETER_NUM_UNITS[group]
    if group == 0 or scaled >= 100:
        return f"{int(scaled):,d} {unit}"
    return f"{scaled:,.1f} {unit}"


def summarize(lightning_module: nn.Module, max_depth: int = 1) -> ModelSummary:
    """Build the :class:`ModelSummary` of ``lightning_module``."""
    return ModelSummary(lightning_module, max_depth=max_depth)
