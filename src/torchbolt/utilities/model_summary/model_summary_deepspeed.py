"""The summary of a model trained with DeepSpeed ZeRO stage 3, at Lightning's module path."""

from __future__ import annotations

from torch import nn

from torchbolt.utilities.model_summary.model_summary import LayerSummary, ModelSummary


def deepspeed_param_size(p: nn.Parameter) -> int:
    """The full number of elements of a parameter that DeepSpeed ZeRO stage 3 may have partitioned."""
    full = getattr(p, "ds_numel", None)
    return int(full) if full is not None else p.numel()


class DeepSpeedLayerSummary(LayerSummary):
    """:class:`LayerSummary` counting partitioned parameters at their full size."""

    @property
    def num_parameters(self) -> int:
        return sum(deepspeed_param_size(p) for p in self._module.parameters())


class DeepSpeedSummary(ModelSummary):
    """:class:`ModelSummary` for a model whose parameters DeepSpeed ZeRO stage 3 partitioned across processes.

    Such a parameter is empty on each process and carries its full size in ``ds_numel``; the counts
    (per layer, total, trainable, model size) use that size, so they describe the whole model.
    """

    _layer_class = DeepSpeedLayerSummary

    @property
    def total_parameters(self) -> int:
        return sum(deepspeed_param_size(p) for p in self._model.parameters())

    @property
    def trainable_parameters(self) -> int:
        return sum(deepspeed_param_size(p) for p in self._model.parameters() if p.requires_grad)


__all__ = ["DeepSpeedLayerSummary", "DeepSpeedSummary", "deepspeed_param_size"]
