"""Exact graph rewrites a target's runtime needs, by name. Each takes an eval-mode module and example
inputs (for rewrites that hold only at particular shapes; the others ignore them) and returns (rewritten
module, list of what it changed); `stages/rewrite.py` runs them and checks exactness."""

from __future__ import annotations

from compressor.rewrites.convtranspose import decompose_convtranspose
from compressor.rewrites.convtranspose_1x1 import convtranspose_1x1_to_linear
from compressor.rewrites.fold_batchnorm import fold_batchnorm
from compressor.rewrites.reflection_pad import reflection_pad_to_gather

REWRITES = {
    "fold_batchnorm": fold_batchnorm,
    "convtranspose_1x1_to_linear": convtranspose_1x1_to_linear,
    "decompose_convtranspose": decompose_convtranspose,
    "reflection_pad_to_gather": reflection_pad_to_gather,
}
