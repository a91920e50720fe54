"""A table of a LightningModule's layers and parameter counts (what the ``ModelSummary`` callback prints).

Laid out as in Lightning: ``model_summary`` (the table) and ``model_summary_deepspeed`` (ZeRO stage 3).
"""

from torchbolt.utilities.model_summary.model_summary import (
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
    "UNKNOWN_SIZE",
    "DeepSpeedSummary",
    "LayerSummary",
    "ModelSummary",
    "get_formatted_model_size",
    "get_human_readable_count",
    "parse_batch_shape",
    "summarize",
]
