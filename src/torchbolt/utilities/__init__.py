"""General utilities, at the paths Lightning users import them from."""

from torchbolt.utilities.apply_func import apply_to_collection, move_data_to_device
from torchbolt.utilities.combined_loader import CombinedLoader
from torchbolt.utilities.data import suggested_max_num_workers
from torchbolt.utilities.distributed import is_shared_filesystem
from torchbolt.utilities.enums import GradClipAlgorithmType, LightningEnum
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.grads import grad_norm
from torchbolt.utilities.parameter_tying import find_shared_parameters, set_shared_parameters
from torchbolt.utilities.parsing import AttributeDict, is_overridden, is_picklable
from torchbolt.utilities.rank_zero import (
    rank_zero_debug,
    rank_zero_deprecation,
    rank_zero_info,
    rank_zero_only,
    rank_zero_warn,
)
from torchbolt.utilities.seed import isolate_rng, seed_everything
from torchbolt.utilities.throughput import measure_flops
from torchbolt.utilities.warnings import disable_possible_user_warnings

__all__ = [
    "AttributeDict",
    "CombinedLoader",
    "GradClipAlgorithmType",
    "LightningEnum",
    "MisconfigurationException",
    "apply_to_collection",
    "disable_possible_user_warnings",
    "find_shared_parameters",
    "grad_norm",
    "is_overridden",
    "is_picklable",
    "is_shared_filesystem",
    "isolate_rng",
    "measure_flops",
    "move_data_to_device",
    "rank_zero_debug",
    "rank_zero_deprecation",
    "rank_zero_info",
    "rank_zero_only",
    "rank_zero_warn",
    "seed_everything",
    "set_shared_parameters",
    "suggested_max_num_workers",
]
