"""Targets, profiles and the resolved run configuration: pydantic schemas, lookup by name or path, `--set` overrides.

A target (targets/*.yaml) says what the hardware needs; a profile (profiles/*.yaml) says how hard to
compress. `resolve()` merges them with the seed and the user's `--set key=value` overrides into one
`ResolvedConfig`, whose hash identifies the run in the manifest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from compressor.errors import ConfigError, UsageError, first_line, validation_summary
from compressor.files import read_yaml
from compressor.release.budgets import Budgets
from compressor.runtimes import AnyRuntimeOptions
from compressor.stages import AnyStageConfig

PACKAGE_DIR = Path(__file__).resolve().parent


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParitySettings(_Frozen):
    """How closely an exported artifact must match the torch model on seeded prior samples."""

    atol: float = Field(1e-4, description="Largest allowed absolute difference.")
    rtol: float = Field(1e-3, description="Largest allowed difference relative to the reference's largest magnitude.")
    samples: int = Field(16, ge=1, description="Seeded prior samples compared.")


class BenchmarkSettings(_Frozen):
    """How the artifact is timed on its runtime."""

    batch_sizes: list[PositiveInt] = Field([1, 16], min_length=1, description="Batch sizes timed, one row each.")
    threads: int = Field(2, ge=1, description="Intra-op threads given to the runtime.")
    warmup: int = Field(10, ge=0, description="Untimed runs first.")
    runs: int = Field(50, ge=1, description="Timed runs; median and p90 are reported.")


class QuantizationRules(_Frozen):
    """How the target's runtime wants int8 tensors laid out to run them fast."""

    activations: Literal["uint8", "int8"] = Field(
        "uint8", description="Activation type: ORT x86 fuses uint8 activations with int8 weights (U8S8)."
    )
    activation_symmetric: bool = Field(False, description="Zero point fixed at 0 (TensorRT needs it).")
    weight_per_channel: bool = Field(True, description="One int8 scale per output channel.")
    weight_bits: Literal[7, 8] = Field(
        8,
        description="Weight levels used: 7 (-64..64) keeps x86 cores without VNNI from saturating the int16 sums "
        "of their u8 x s8 multiply-add (AVX2's vpmaddubsw); 8 for VNNI cores, GPUs and phones.",
    )


class Target(_Frozen):
    """A named piece of hardware: its runtime, what it runs fast and how to check and time artifacts on it."""

    # The name is also the release folder's name (OUT/<name>/), so it must be a plain slug.
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Release folder name, e.g. cpu-x86.")
    aliases: list[str] = Field(default_factory=list, description="Short names accepted by --target.")
    description: str = ""
    runtime: AnyRuntimeOptions = Field(description="Runtime the artifacts are built for, and its options (`kind` names it).")
    precisions: list[Literal["fp32", "fp16", "int8"]] = Field(["fp32"], description="Precisions it runs fast.")
    rewrites: list[str] = Field(default_factory=list, description="Graph rewrites its runtime needs, in order.")
    default_profile: str = "balanced"
    channel_multiple: PositiveInt = Field(
        8, description="Structured pruning keeps channel counts that are multiples of this (what the runtime's kernels "
        "work in: 16 for ONNX Runtime's x86 int8 kernels, 8 for TensorRT's tensor cores)."
    )
    quantization: QuantizationRules = QuantizationRules()
    parity: ParitySettings = ParitySettings()
    benchmark: BenchmarkSettings = BenchmarkSettings()

    @field_validator("runtime", mode="before")
    @classmethod
    def _runtime_by_name(cls, value: Any) -> Any:
        # `runtime: onnxruntime` is short for `runtime: {kind: onnxruntime}` (every option at its default).
        return {"kind": value} if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _runtime_options_in_their_section(cls, data: Any) -> Any:
        if isinstance(data, dict) and "opset" in data:
            raise ValueError("opset is a runtime option now: write it under runtime: (runtime: {kind: onnxruntime, opset: 20})")
        return data


class QualitySettings(_Frozen):
    """How artifacts are judged on what they generate (see evaluate/quality.py)."""

    samples: int = Field(256, ge=2, description="Seeded latents each artifact and the reference generate.")
    batch: int = Field(32, ge=1, description="Batch size for generating and for feature extraction.")
    fid: Literal["auto", "on", "off"] = Field(
        "auto",
        description="auto: FID when Inception weights are found, else the manifest says why not; on: missing "
        "weights are an error (a fid budget implies on); off: no FID. The FD-surrogate is always computed.",
    )
    fid_weights: str | None = Field(None, description="Inception TorchScript file (else COMPRESSOR_FID_WEIGHTS, ...).")
    fid_stats: str | None = Field(
        None, description="Reference statistics .npz from `compressor fid-stats` (real images); default: the "
        "reference model's own samples on other seeds."
    )
    gallery: int = Field(16, ge=0, description="Latents shown in the report's reference-vs-artifact image grid.")

    @model_validator(mode="after")
    def _stats_need_fid(self) -> QualitySettings:
        if self.fid_stats and self.fid == "off":
            raise ValueError("quality.fid_stats is FID's reference; set quality.fid to auto or on, or drop fid_stats")
        return self

    @field_validator("fid", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: Any) -> Any:
        # YAML reads a bare on/off as true/false, in profile files and in --set values alike.
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


class Profile(_Frozen):
    """A compression recipe: the ordered stages and their settings, how quality is measured, and the budgets."""

    name: str
    description: str = ""
    stages: list[AnyStageConfig] = Field(default_factory=list, description="Stages run in this order.")
    quality: QualitySettings = QualitySettings()
    budgets: Budgets = Budgets()

    @field_validator("stages")
    @classmethod
    def _one_stage_per_kind(cls, stages: list) -> list:
        # `--set stages.<kind>.<field>` addresses a stage by its kind, so kinds must be unique.
        kinds = [stage.kind for stage in stages]
        repeated = sorted({kind for kind in kinds if kinds.count(kind) > 1})
        if repeated:
            raise ValueError(f"stage kind(s) {repeated} appear more than once; merge them into one entry")
        quantizing = [index for index, stage in enumerate(stages) if stage.quantizes]
        if len(quantizing) > 1:  # each makes the plan for the final artifact
            raise ValueError("ptq and qat both quantize the final artifact; keep one of them in the profile")
        if quantizing and quantizing[0] != len(stages) - 1:  # its plan applies to the model as it leaves torch
            raise ValueError(f"the quantizing stage ({stages[quantizing[0]].kind}) must be the last stage")
        if "rewrite" in kinds:
            # The rewrites replace modules with forms the pruning graph does not know, and rename none of the
            # layers the distill stage matches: measuring, pruning and training come first.
            late = [kind for kind in kinds[kinds.index("rewrite") + 1 :] if kind in ("sensitivity", "prune", "distill")]
            if late:
                raise ValueError(f"stage(s) {late} must come before the rewrite stage "
                                 "(order: sensitivity, prune, distill, rewrite, ptq|qat)")
        return stages


class ResolvedConfig(_Frozen):
    """Everything that decides a run's artifacts (besides the checkpoint): its hash names the configuration."""

    seed: int = 0
    target: Target
    profile: Profile

    def sha256(self) -> str:
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    @model_validator(mode="after")
    def _budgets_fit_the_run(self) -> ResolvedConfig:
        budgets, timed = self.profile.budgets, self.target.benchmark.batch_sizes
        if budgets.latency_ms and budgets.latency_ms.batch not in timed:
            raise ValueError(
                f"budgets.latency_ms.batch {budgets.latency_ms.batch} is not a batch size the target times "
                f"({timed}); pick one of those or add it to target.benchmark.batch_sizes"
            )
        if budgets.fid and self.profile.quality.fid == "off":
            raise ValueError("a fid budget needs FID: remove budgets.fid or set quality.fid to auto or on")
        return self


def data_dir(kind: Literal["targets", "profiles"]) -> Path:
    """Folder of the bundled YAML files: inside the wheel, or at the repository root for a source checkout."""
    packaged = PACKAGE_DIR / "_data" / kind
    return packaged if packaged.is_dir() else PACKAGE_DIR.parent / kind


def bundled(kind: Literal["targets", "profiles"]) -> dict[str, Path]:
    """Name -> file of every bundled target or profile (aliases included for targets)."""
    found: dict[str, Path] = {}
    for path in sorted(data_dir(kind).glob("*.yaml")):
        found[path.stem] = path
        if kind == "targets":
            for alias in read_yaml(path, "target").get("aliases", []):
                found.setdefault(alias, path)
    return found


def find_file(kind: Literal["targets", "profiles"], name_or_path: str) -> Path:
    """A bundled name or alias, or a path to the user's own YAML file."""
    known = bundled(kind)
    if name_or_path in known:
        return known[name_or_path]
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"}:
        if not path.is_file():
            raise ConfigError(f"{path}: {kind[:-1]} file not found; check the path")
        return path
    names = ", ".join(sorted(known))
    raise UsageError(f"unknown {kind[:-1]} '{name_or_path}'; known: {names} (or pass a path to a .yaml file)")


def load_target(name_or_path: str) -> Target:
    path = find_file("targets", name_or_path)
    return _validate(Target, read_yaml(path, "target"), path, "targets")


def load_profile(name_or_path: str) -> Profile:
    path = find_file("profiles", name_or_path)
    return _validate(Profile, read_yaml(path, "profile"), path, "profiles")


def resolve(target: str, profile: str | None = None, sets: list[str] = (), seed: int = 0) -> ResolvedConfig:
    """Load target and profile (the target's default profile unless one is named) and apply `--set` overrides."""
    resolved_target = load_target(target)
    resolved_profile = load_profile(profile or resolved_target.default_profile)
    try:
        config = ResolvedConfig(seed=seed, target=resolved_target, profile=resolved_profile)
    except ValidationError as exc:
        raise ConfigError(f"target {target} with profile {resolved_profile.name}: {validation_summary(exc)}") from exc
    config = apply_overrides(config, sets) if sets else config
    _check_rewrites(config)
    return config


def _check_rewrites(config: ResolvedConfig) -> None:
    from compressor.stages.rewrite import check_rewrite_names

    check_rewrite_names(config.target.rewrites, f"target {config.target.name}: rewrites")
    for stage in config.profile.stages:
        if stage.kind == "rewrite" and stage.passes is not None:
            check_rewrite_names(stage.passes, f"profile {config.profile.name}: stages.rewrite.passes")


def apply_overrides(config: ResolvedConfig, sets: list[str]) -> ResolvedConfig:
    """Apply `key=value` overrides. Keys are dotted paths into the resolved config; stages are addressed by kind
    (`stages.rewrite.passes=[fold_batchnorm]`), values are YAML (`1e-3`, `[1, 8]`, `false`)."""
    tree = _addressable(config)
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set '{item}': expected key=value, e.g. --set target.benchmark.runs=20")
        assign_override(tree, key.strip(), parse_set_value(item, raw))
    # `stages.<kind>=null` drops a stage, as `budgets.<name>=null` drops a budget (run --precision fp32 does it).
    tree["profile"]["stages"] = [stage for stage in tree["profile"]["stages"].values() if stage is not None]
    try:
        return ResolvedConfig.model_validate(tree)
    except ValidationError as exc:
        raise UsageError(f"--set: invalid value: {validation_summary(exc)}") from exc


def parse_set_value(item: str, raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise UsageError(f"--set '{item}': the value is not valid YAML ({first_line(exc)})") from exc


def _addressable(config: ResolvedConfig) -> dict[str, Any]:
    """The config as plain data, stages keyed by kind, and the top-level `stages.` alias for `profile.stages.`."""
    tree = config.model_dump(mode="json")
    tree["profile"]["stages"] = {stage["kind"]: stage for stage in tree["profile"]["stages"]}
    return tree


_PROFILE_SHORTHANDS = ("stages", "quality", "budgets")


def assign_override(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set `key` (a dotted path; stages./quality./budgets. are short for profile.<...>) in the config as plain data."""
    parts = key.split(".")
    if parts[0] in _PROFILE_SHORTHANDS:  # shorthand used in docs and profiles: stages.<kind>.<field>, budgets.<name>...
        parts = ["profile", *parts]
    node = tree
    in_budgets = parts[:2] == ["profile", "budgets"]
    for depth, part in enumerate(parts):
        if in_budgets and depth == 2 and len(parts) > 3 and isinstance(node, dict) and part in node and node[part] is None:
            node[part] = {}  # a budget the profile leaves out is created by setting one of its fields
        if in_budgets and depth == 3 and isinstance(node, dict):
            _check_budget_field(key, parts[2], part)  # a budget just created has no keys to list yet: ask its schema
        elif not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:depth]) or "(top level)"
            if parts[:2] == ["profile", "stages"] and depth == 2:
                raise UsageError(f"--set {key}: the profile has no '{part}' stage (its stages: {', '.join(node)})")
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "(not a mapping)"
            raise UsageError(f"--set {key}: unknown key '{part}' under {where}; known: {known}")
        if depth == len(parts) - 1:
            node[part] = value
        node = node[part]


def _check_budget_field(key: str, budget: str, field: str) -> None:
    annotation = Budgets.model_fields[budget].annotation  # e.g. MaxLimit | None
    limit = next(arg for arg in get_args(annotation) if isinstance(arg, type) and issubclass(arg, BaseModel))
    if field not in limit.model_fields:
        raise UsageError(f"--set {key}: budget {budget} has no field '{field}'; its fields: {', '.join(limit.model_fields)}")


def _validate(model: type[BaseModel], data: dict[str, Any], path: Path, kind: Literal["targets", "profiles"]):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {validation_summary(exc)}; `compressor {kind} schema` lists every field") from exc
