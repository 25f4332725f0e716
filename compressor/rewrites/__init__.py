"""Exact graph rewrites a target's runtime needs, by name. Each takes an eval-mode module and example
inputs (for rewrites that hold only at particular shapes; the others ignore them) and returns (rewritten
module, list of what it changed); `stages/rewrite.py` runs them and checks exactness."""

from __future__ import annotations

from compressor.rewrites.convtranspose import decompose_convtranspose, narrow_convtranspose_to_conv
from compressor.rewrites.convtranspose_1x1 import convtranspose_1x1_to_linear
from compressor.rewrites.fold_batchnorm import fold_batchnorm
from compressor.rewrites.linear_channels_last import linear_channels_last
from compressor.rewrites.linear_convtranspose import linear_to_convtranspose
from compressor.rewrites.narrow_conv import narrow_conv_to_blocks
from compressor.rewrites.reflection_pad import reflection_pad_to_gather
from compressor.rewrites.upsample_conv import upsample_conv_to_convtranspose, upsample_conv_to_phases

REWRITES = {
    "fold_batchnorm": fold_batchnorm,
    "convtranspose_1x1_to_linear": convtranspose_1x1_to_linear,
    "decompose_convtranspose": decompose_convtranspose,
    "upsample_conv_to_phases": upsample_conv_to_phases,
    "linear_channels_last": linear_channels_last,
    "narrow_conv_to_blocks": narrow_conv_to_blocks,
    "reflection_pad_to_gather": reflection_pad_to_gather,
    "linear_to_convtranspose": linear_to_convtranspose,
    "narrow_convtranspose_to_conv": narrow_convtranspose_to_conv,
    "upsample_conv_to_convtranspose": upsample_conv_to_convtranspose,
}
