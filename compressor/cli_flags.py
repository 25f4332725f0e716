"""`run`'s first-class flags (--precision, --opset, --runs, --warmup, --fid-weights, --fid-stats): each stands for
`--set` entries, under the names optimum-cli, olive and trtexec users know. The CLI appends them after the user's
own `--set` entries, and `--dry-run` prints which keys each flag became (`cli_aliases`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Precision = Literal["int8", "mixed", "fp16", "fp32"]


@dataclass(frozen=True)
class Flags:
    """run's first-class flags that stand for `--set` keys, under the names optimum-cli, olive and trtexec users know
    (--opset, --precision, --iterations)."""

    precision: str | None = None
    opset: int | None = None
    runs: int | None = None
    warmup: int | None = None
    fid_weights: Path | None = None
    fid_stats: Path | None = None


def flag_sets(flags: Flags, target: str, profile: str | None, sets: list[str]) -> dict[str, list[str]]:
    """Each flag given -> the `--set key=value` entries it stands for. They apply after the user's own entries, and
    --dry-run prints this mapping beside the resolved config."""
    aliases: dict[str, list[str]] = {}
    if flags.precision or flags.opset is not None:
        # Both depend on what the target and profile hold once the user's own --set entries are applied (a profile
        # whose ptq stage --set dropped has no auto_precision to set).
        from compressor.config import resolve

        resolved = resolve(target, profile, sets)
        if flags.precision:
            aliases["--precision"] = _precision_sets(flags.precision, resolved.target, resolved.profile)
        if flags.opset is not None:
            aliases["--opset"] = [_opset_set(flags.opset, resolved.target)]
    plain = {
        "--runs": ("target.benchmark.runs", flags.runs),
        "--warmup": ("target.benchmark.warmup", flags.warmup),
        "--fid-weights": ("quality.fid_weights", flags.fid_weights),
        "--fid-stats": ("quality.fid_stats", flags.fid_stats),
    }
    for flag, (key, value) in plain.items():
        if value is not None:  # JSON quoting keeps a path a string whatever its text
            aliases[flag] = [f"{key}={value if isinstance(value, int) else json.dumps(str(value))}"]
    _refuse_set_twice(aliases, sets)
    return aliases


def _precision_sets(precision: str, target, profile) -> list[str]:
    """int8 and mixed tune the profile's quantizing stage; fp16 and fp32 drop it (a float release), and on TensorRT
    also pick the engine's float precision."""
    from compressor.errors import UsageError

    needs = "int8" if precision == "mixed" else precision
    if needs not in target.precisions:
        raise UsageError(f"--precision {precision}: target {target.name} runs {', '.join(target.precisions)}; "
                         "pick one of those, or another --target")
    quantizing = [stage.kind for stage in profile.stages if stage.quantizes]
    if precision in ("int8", "mixed"):
        if not quantizing:
            raise UsageError(f"--precision {precision}: profile {profile.name}, with the --set entries applied, has no "
                             "quantizing stage (ptq or qat); keep its ptq stage or pick a profile that has one, e.g. balanced")
        if quantizing[0] != "ptq":  # qat quantizes every layer its rules leave; it has no auto mode
            if precision == "mixed":
                raise UsageError(f"--precision mixed: the {quantizing[0]} stage has no auto_precision; use a ptq profile "
                                 "(--profile balanced), or keep layers float with its rules")
            return []
        return [f"stages.ptq.auto_precision={'true' if precision == 'mixed' else 'false'}"]
    sets = [f"stages.{kind}=null" for kind in quantizing]  # null drops a stage, as it drops a budget
    if profile.budgets.latency_vs_baseline and not any(s.changes_model for s in profile.stages if not s.quantizes):
        sets.append("budgets.latency_vs_baseline=null")  # no baseline artifact is left to compare with
    if "float_dtype" in type(target.runtime).model_fields:
        return [*sets, f"target.runtime.float_dtype={precision}"]
    if precision != target.runtime.float_precision:
        raise UsageError(f"--precision {precision}: {target.runtime.kind} keeps float layers in "
                         f"{target.runtime.float_precision}; pick --precision {target.runtime.float_precision}")
    return sets


def _opset_set(opset: int, target) -> str:
    from compressor.errors import UsageError

    if "opset" not in type(target.runtime).model_fields:
        raise UsageError(f"--opset: target {target.name} runs {target.runtime.kind}, which exports no ONNX; drop --opset")
    return f"target.runtime.opset={opset}"


def _refuse_set_twice(aliases: dict[str, list[str]], sets: list[str]) -> None:
    """A flag and a --set entry for the same key: which one wins would be a guess, so say it."""
    from compressor.errors import UsageError

    given = {item.partition("=")[0].strip().removeprefix("profile.") for item in sets}
    for flag, entries in aliases.items():
        for key in (entry.partition("=")[0] for entry in entries):
            if key in given:
                raise UsageError(f"{flag} and --set {key} both set {key}; keep one of them")
