"""General utilities, at the paths Lightning users import them from."""

from torchbolt.utilities.apply_func import apply_to_collection, move_data_to_device
from torchbolt.utilities.combined_loader import CombinedLoader
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.grads import grad_norm
from torchbolt.utilities.parsing import AttributeDict, is_overridden
from torchbolt.utilities.rank_zero import (
    rank_zero_debug,
    rank_zero_deprecation,
    rank_zero_info,
    rank_zero_only,
    rank_zero_warn,
)
from torchbolt.utilities.seed import isolate_rng, seed_everything
from torchbolt.utilities.throughput import measure_flops

__all__ = [
    "AttributeDict",
    "CombinedLoader",
    "MisconfigurationException",
    "apply_to_collection",
    "grad_norm",
    "is_overridden",
    "isolate_rng",
    "measure_flops",
    "move_data_to_device",
    "rank_zero_debug",
    "rank_zero_deprecation",
    "rank_zero_info",
    "rank_zero_only",
    "rank_zero_warn",
    "seed_everything",
]
