"""Exact graph rewrites a target's runtime needs, by name. Each takes an eval-mode module and returns
(rewritten module, list of what it changed); `stages/rewrite.py` runs them and checks exactness."""

from __future__ import annotations

from compressor.rewrites.convtranspose import decompose_convtranspose
from compressor.rewrites.fold_batchnorm import fold_batchnorm

REWRITES = {"fold_batchnorm": fold_batchnorm, "decompose_convtranspose": decompose_convtranspose}
