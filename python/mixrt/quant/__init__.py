# mixrt.quant: weight quantization for the .mixrt dtypes q8, q4 and mix: the reference layouts
# (layouts.py), round-to-nearest quantizers and 2-bit building blocks (rtn.py) and the mix
# bit-budget planner (plan.py). Tested by tests/test_quant_layouts.py.
from .layouts import (MixParts, bits_per_weight, decode_scales2, dequantize, pack_mix, pack_q4,
                      pack_q8, part_sizes, unpack_mix, unpack_q4, unpack_q8)
from .plan import MixPlan, k4_step, mix_bytes, outlier_count, plan_mix
from .rtn import (asym_zero, encode_scales, fit_groups2, fit_q4, group_ranges, outlier_gains,
                  quantize_asym, quantize_mix_rtn, quantize_q4, quantize_q8,
                  quantize_super_scales, strip_permutation, super_scales)

__all__ = ["MixParts", "MixPlan", "asym_zero", "bits_per_weight", "decode_scales2", "dequantize",
           "encode_scales", "fit_groups2", "fit_q4", "group_ranges", "k4_step", "mix_bytes",
           "outlier_count", "outlier_gains", "pack_mix", "pack_q4", "pack_q8", "part_sizes",
           "plan_mix", "quantize_asym", "quantize_mix_rtn", "quantize_q4", "quantize_q8",
           "quantize_super_scales", "strip_permutation", "super_scales", "unpack_mix",
           "unpack_q4", "unpack_q8"]
