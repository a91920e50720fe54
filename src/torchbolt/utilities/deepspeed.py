"""DeepSpeed helpers at the module path Lightning scripts import them from.

``deepspeed`` itself is imported only when a helper runs.
"""

from torchbolt.strategies.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

__all__ = ["convert_zero_checkpoint_to_fp32_state_dict"]
