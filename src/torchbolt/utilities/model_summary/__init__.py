"""The model summary table: :class:`ModelSummary` and its helpers, laid out as in Lightning: ``model_summary``
(the table) and ``model_summary_deepspeed`` (parameters partitioned by ZeRO stage 3)."""

from torchbolt.utilities.model_summary.model_summary import (
    LEFTOVER_PARAMS_NAME,
    NOT_APPLICABLE,
    PARAMETER_NUM_UNITS,
    UNKNOWN_SIZE,
    LayerSummary,
    ModelSummary,
    get_formatted_model_size,
    get_human_readable_count,
    parse_batch_shape,
    summarize,
)
from torchbolt.utilities.model_summary.model_summary_deepspeed import DeepSpeedSummary

__all__ = [
    "LEFTOVER_PARAMS_NAME",
    "NOT_APPLICABLE",
    "PARAMETER_NUM_UNITS",
    "UNKNOWN_SIZE",
    "DeepSpeedSummary",
    "LayerSummary",
    "ModelSummary",
    "get_formatted_model_size",
    "get_human_readable_count",
    "parse_batch_shape",
    "summarize",
]
