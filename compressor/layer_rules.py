"""Per-layer rules shared by the stages that treat layers differently (ptq now; prune and qat later).

An ordered list of `{match: <glob on the module name>, ...}`; the last rule that matches a layer wins
(ModelOpt's semantics), `skip: true` leaves the layer alone. Names are torch module names as
`compressor inspect` shows them ("blocks.2"); a rewritten layer keeps the name of the module it replaced.
"""

from __future__ import annotations

import logging
from fnmatch import fnmatchcase
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("compressor")


class LayerRule(BaseModel):
    """One rule: which layers (glob) and what to do with them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    match: str = Field(description="Glob on the module name, e.g. 'blocks.8*' or '*attn*'.")
    precision: Literal["fp32", "fp16", "int8"] | None = Field(None, description="Precision the layer runs in.")
    skip: bool = Field(False, description="Leave the layer alone (for ptq: keep it in float).")


def apply_rules(layers: list[str], rules: list[LayerRule], where: str) -> dict[str, tuple[LayerRule, int]]:
    """Layer -> (last matching rule, its index). Rules that match no layer are named in a warning."""
    chosen: dict[str, tuple[LayerRule, int]] = {}
    for index, rule in enumerate(rules):
        matched = [layer for layer in layers if fnmatchcase(layer, rule.match)]
        if not matched:
            log.warning("%s: rule %d (match '%s') matches no layer; layers are: %s", where, index, rule.match, ", ".join(layers))
        for layer in matched:
            chosen[layer] = (rule, index)
    return chosen
