"""Per-layer rules shared by the stages that treat layers differently (ptq and qat; prune later).

An ordered list of `{match: <glob on the module name>, ...}`; the last rule that matches a layer wins
(ModelOpt's semantics), `skip: true` leaves the layer alone. Names are torch module names as
`compressor inspect` shows them ("blocks.2"); a rewritten layer keeps the name of the module it replaced.
"""

from __future__ import annotations

import logging
from fnmatch import fnmatchcase
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from compressor.errors import ConfigError

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


def precision_plan(
    layers: list[str], rules: list[LayerRule], where: str, target, float_precision: str = "fp32"
) -> tuple[dict[str, tuple[str, str]], set[str]]:
    """Layer -> (precision, why) for ptq and qat: int8 by default, what the last matching rule says otherwise
    (skip = float); and the layers a rule placed. A quantizer can place a layer in int8 or in the float
    precision its runtime keeps float parts in (`float_precision`: fp32 on ONNX Runtime, fp16 for TensorRT);
    anything else, or a precision the target does not run, is an error."""
    plan = {layer: ("int8", "default") for layer in layers}
    matched = apply_rules(layers, rules, where)
    runnable = [p for p in ("int8", float_precision) if p in target.precisions]
    for layer, (rule, index) in matched.items():
        precision = float_precision if rule.skip else (rule.precision or "int8")
        if precision not in runnable:
            raise ConfigError(
                f"{where}[{index}]: layer '{layer}' asks for {precision}, which target {target.name} does not run "
                f"in this stage (it runs {runnable}; target precisions {target.precisions}); pick one of those"
            )
        plan[layer] = (precision, f"rule {index} (match '{rule.match}')")
    return plan, set(matched)


def describe_plan(plan: dict[str, tuple[str, str]]) -> dict:
    """What the manifest records of a plan: each layer's precision and why, the int8 count, the artifact's label."""
    int8_layers = sum(precision == "int8" for precision, _ in plan.values())
    return {
        "layers": {layer: {"precision": precision, "reason": why} for layer, (precision, why) in plan.items()},
        "int8_layers": int8_layers,
        "precision": "int8" if int8_layers == len(plan) else "mixed" if int8_layers else _float_label(plan),
    }


def _float_label(plan: dict[str, tuple[str, str]]) -> str:
    precisions = {precision for precision, _ in plan.values()}
    return precisions.pop() if len(precisions) == 1 else "fp32"
