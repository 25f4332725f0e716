"""The `compressor` command line: thin commands that build a RunConfig (or call one library function).

Heavy modules (torch, onnxruntime) are imported inside the commands so `compressor --help` is instant.
Every CompressorError becomes one line on stderr and its exit code; `--debug` shows the traceback.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from compressor.cli_flags import Flags, Precision, flag_sets


class _CleanHelp:
    """Option help in the shape of click and pip: no `<bool>` after a flag, TEXT/PATH/INTEGER instead of typer's
    `<str>`/`<path>`/`<int>`, and help text printed as written (rich markup would eat `[fid]`, our extras' names)."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            _clean_param(param)
        return params


class _Command(_CleanHelp, TyperCommand):
    pass


class _Group(_CleanHelp, TyperGroup):
    pass


class _Typer(typer.Typer):
    """Every command of this app and its sub-apps gets the clean option help."""

    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or _Command, **kwargs)


_TYPE_WORDS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "path": "PATH", "file": "FILE", "directory": "DIR"}


def _clean_param(param) -> None:
    """Once per parameter (get_params runs on every parse and help): escape its help and replace its type label."""
    if getattr(param, "_clean", False):
        return
    param._clean = True
    if getattr(param, "help", None):
        from rich.markup import escape

        param.help = escape(param.help)
    typer_label = param.display_type

    def display_type(ctx) -> str:
        if getattr(param, "is_flag", False):
            return ""  # a flag takes no value
        label = typer_label(ctx).strip("<>").removeprefix("list[").removesuffix("]").removesuffix(" range")
        return label if "|" in label else _TYPE_WORDS.get(label, label.upper())  # choices stay as typed

    param.display_type = display_type  # every help renderer (rich or plain) asks this method


# -h as well as --help everywhere: sub-apps' contexts inherit the names from the root's.
_HELP = {"help_option_names": ["-h", "--help"]}

app = _Typer(
    cls=_Group,
    help="Compress a trained generative model into checked, timed release artifacts for a named piece of hardware.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings=_HELP,
)
targets_app = _Typer(cls=_Group, help="List the bundled targets, or show one.", no_args_is_help=False, context_settings=_HELP)
profiles_app = _Typer(cls=_Group, help="List the bundled profiles, or show one.", no_args_is_help=False, context_settings=_HELP)
app.add_typer(targets_app, name="targets")
app.add_typer(profiles_app, name="profiles")

_state = {"debug": False}


def _bundled_names(kind: str, incomplete: str) -> list[str]:
    """Shell completion of --target / --profile: the bundled names and aliases that start with what is typed."""
    from compressor.config import bundled

    return sorted(name for name in bundled(kind) if name.startswith(incomplete))


def _complete_target(incomplete: str) -> list[str]:
    return _bundled_names("targets", incomplete)


def _complete_profile(incomplete: str) -> list[str]:
    return _bundled_names("profiles", incomplete)


Checkpoint = Annotated[Path, typer.Argument(help="Model folder with compressor.yaml, or a checkpoint file.")]
Arch = Annotated[
    Optional[str], typer.Option(metavar="MODULE:CALLABLE", help="Builds the model, for a bare state_dict.")
]
Card = Annotated[Optional[Path], typer.Option(metavar="FILE", help="Model card YAML describing inputs, for files without one.")]
TrustPickle = Annotated[
    bool, typer.Option("--trust-pickle", help="Allow loading a fully pickled module (runs code from the file).")
]
FidWeights = Annotated[
    Optional[Path],
    typer.Option(metavar="FILE", help="Inception TorchScript weights for FID (else $COMPRESSOR_FID_WEIGHTS, hub cache, [fid] extra)."),
]

def _versions() -> str:
    """'compressor 0.1.0 (torch 2.13.0, onnxruntime 1.31.1, python 3.11.9)': the manifest's record of versions, read
    from package metadata (importing torch takes seconds)."""
    from compressor.release.manifest import library_versions

    found = library_versions()
    return f"compressor {found['compressor']} (torch {found['torch']}, onnxruntime {found['onnxruntime']}, python {found['python']})"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(_versions())
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_print_version, is_eager=True, help="Print the versions and exit.")
    ] = False,
) -> None:
    _state["debug"] = debug


@app.command()
def run(
    checkpoint: Checkpoint,
    target: Annotated[
        str, typer.Option(metavar="NAME", autocompletion=_complete_target, help="Target name, alias or YAML path (`compressor targets` lists them).")
    ] = "cpu",
    profile: Annotated[
        Optional[str],
        typer.Option(metavar="NAME", autocompletion=_complete_profile, help="Profile name or YAML path; default: the target's."),
    ] = None,
    precision: Annotated[
        Optional[Precision],
        typer.Option(help="int8: every layer the quantizing stage can; mixed: int8 where stages.ptq.min_psnr allows, float "
                     "elsewhere; fp16 or fp32: a float release, no quantizing stage (fp16: TensorRT targets)."),
    ] = None,
    opset: Annotated[Optional[int], typer.Option(metavar="N", help="ONNX opset of the export (target.runtime.opset).")] = None,
    runs: Annotated[
        Optional[int],
        typer.Option("--runs", "--iterations", metavar="N", min=1, help="Timed runs per batch size (target.benchmark.runs)."),
    ] = None,
    warmup: Annotated[
        Optional[int], typer.Option(metavar="N", min=0, help="Untimed runs before them (target.benchmark.warmup).")
    ] = None,
    set_: Annotated[
        list[str], typer.Option("--set", metavar="KEY=VALUE", help="Override any config value, e.g. stages.ptq.samples=64 (repeatable).")
    ] = [],
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="DIR", help="Release root; the release goes to DIR/<target-name>/.")
    ] = Path("release"),
    seed: Annotated[int, typer.Option(metavar="N", help="Seed of every prior sample the run draws.")] = 0,
    arch: Arch = None,
    card: Card = None,
    trust_pickle: TrustPickle = False,
    calibration: Annotated[
        Optional[Path],
        typer.Option(metavar="PATH", help="Calibrate quantization on this .npz (or folder of them) instead of the prior."),
    ] = None,
    fid_weights: FidWeights = None,
    fid_stats: Annotated[
        Optional[Path],
        typer.Option(metavar="FILE", help="Reference statistics (.npz from `compressor fid-stats`) to measure FID against."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check the inputs exist; print the resolved config and planned steps; do nothing else.")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted distillation from its last checkpoint (same settings only).")
    ] = False,
) -> None:
    """Compress CHECKPOINT for a target, export it, check it against torch, time it, and write the release."""
    from compressor import api

    flags = Flags(precision=precision, opset=opset, runs=runs, warmup=warmup, fid_weights=fid_weights, fid_stats=fid_stats)
    aliases = flag_sets(flags, target, profile, set_)
    config = api.RunConfig(
        checkpoint=checkpoint, target=target, profile=profile, sets=(*set_, *(s for sets in aliases.values() for s in sets)),
        out=out, seed=seed, arch=arch, card=card, trust_pickle=trust_pickle, calibration=calibration, resume=resume,
    )
    if dry_run:
        typer.echo(json.dumps({**api.plan(config), "cli_aliases": aliases}, indent=2))
        return
    result = api.run(config, listener=_progress())
    if result is None:  # another rank of a torchrun launch: rank 0 writes the release and prints the outcome
        return
    _print_outcome(result)
    _fail_on_budgets(result.budgets, result.release_dir)


@app.command()
def gate(
    manifest: Annotated[Path, typer.Argument(help="A release folder or its manifest.json.")],
    set_: Annotated[
        list[str], typer.Option("--set", metavar="KEY=VALUE", help="Override a budget: budgets.<name>.<field>=value (repeatable).")
    ] = [],
    junit: Annotated[
        Optional[Path], typer.Option(metavar="FILE", help="Write the verdict as JUnit XML (one test case per budget).")
    ] = None,
    summary: Annotated[
        Optional[Path], typer.Option(metavar="FILE", help="Append a Markdown summary (e.g. $GITHUB_STEP_SUMMARY).")
    ] = None,
) -> None:
    """Re-check a finished release against budgets from its manifest alone; exit 3 when one fails, 4 when one
    cannot be judged yet (a TensorRT release's latency, before build-engine)."""
    from compressor.release import gate as gating
    from compressor.release.budgets import verdict

    data, checks = gating.gate(manifest, list(set_))
    for name, check in checks.items():
        typer.echo(f"{verdict(check)} {gating.describe_check(name, check)}")
    typer.echo(gating.verdict_line(data, checks))
    if junit:
        junit.write_text(gating.junit_xml(checks, data["model"]["card"]["name"]))
    if summary:
        with open(summary, "a") as handle:
            handle.write(gating.markdown_summary(data, checks))
    _fail_on_budgets(checks, manifest)


@app.command("build-engine")
def build_engine(
    release: Annotated[Path, typer.Argument(help="A TensorRT release folder (written by `compressor run --target jetson|gpu`).")],
    timing_cache: Annotated[
        Optional[Path], typer.Option(metavar="FILE", help="TensorRT timing cache to reuse and update (speeds up rebuilds).")
    ] = None,
) -> None:
    """On the device: build the TensorRT engine of RELEASE, time it, and add both to the release; then judge budgets."""
    from compressor.api import Steps
    from compressor.release.budgets import final_artifact
    from compressor.release.engine import build_release_engine

    steps = Steps(_progress())
    manifest = steps.run("build engine", lambda: build_release_engine(release, timing_cache))
    engine = manifest["engine"]
    typer.echo(f"{release / engine['file']}: {engine['device']}, TensorRT {engine['tensorrt_version']}, "
               f"built in {engine['build_seconds']:.1f} s")
    _, record = final_artifact(manifest)
    for batch, stats in record["latency"]["batches"].items():
        typer.echo(f"  batch {batch}: median {stats['median_ms']:.3f} ms, p90 {stats['p90_ms']:.3f} ms")
    _fail_on_budgets(manifest.get("budgets", {}), release)


@app.command("check-tensorrt")
def check_tensorrt(
    model: Annotated[Path, typer.Argument(help="An ONNX file, ours or any other.")],
    target: Annotated[
        str,
        typer.Option(metavar="NAME", autocompletion=_complete_target,
                     help="A TensorRT target (name, alias or YAML path): its version and opset limit."),
    ] = "jetson",
) -> None:
    """Check an ONNX file against TensorRT's explicit-quantization rules and its parser's operators; exit 1 if broken."""
    from compressor.config import load_target
    from compressor.errors import ConfigError
    from compressor.runtimes.onnx import tensorrt_rules
    from compressor.runtimes.tensorrt import TensorRT

    resolved = load_target(target)
    if resolved.runtime.kind != "tensorrt":
        raise ConfigError(f"target {resolved.name} runs {resolved.runtime.kind}, not TensorRT; pass --target jetson or gpu")
    version, max_opset = resolved.runtime.tensorrt_version, TensorRT(resolved).max_opset()
    violations = tensorrt_rules.check(_readable_onnx(model), version, max_opset)
    for violation in violations:
        typer.echo(f"{violation.rule}: {violation.message}")
    if violations:
        raise ConfigError(f"{model}: {len(violations)} problem(s) for TensorRT {version} (opset <= {max_opset}), listed above")
    typer.echo(f"{model}: ok for TensorRT {version} (opset <= {max_opset}) on target {resolved.name}")


def _readable_onnx(path: Path):
    import onnx

    from compressor.errors import ConfigError, first_line

    try:
        return onnx.load(str(path))
    except Exception as exc:  # missing, unreadable, not protobuf: onnx raises several types
        raise ConfigError(f"{path}: not a readable ONNX file ({first_line(exc)}); pass an .onnx model") from exc


@app.command("fid-stats")
def fid_stats(
    source: Annotated[Path, typer.Argument(help="Real images (folder, or .npz with 'images') or a model folder/checkpoint.")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", help="Statistics file to write (.npz).")] = Path("fid-stats.npz"),
    extractor: Annotated[Literal["inception", "fd-surrogate"], typer.Option(help="inception (FID) or fd-surrogate.")] = "inception",
    fid_weights: FidWeights = None,
    samples: Annotated[int, typer.Option(metavar="N", min=2, help="Samples drawn when SOURCE is a model.")] = 256,
    seed: Annotated[int, typer.Option(metavar="N", help="Seed of the model's samples (match the run's --seed).")] = 0,
    trust_pickle: TrustPickle = False,
) -> None:
    """Reference statistics (mu, sigma, count, extractor sha256) for `compressor run --fid-stats`."""
    from compressor.api import Steps
    from compressor.cache import cache_dir
    from compressor.evaluate.features import CACHE_KIND
    from compressor.evaluate.reference_stats import make_extractor, reference_stats

    features = make_extractor(extractor, str(fid_weights) if fid_weights else None)
    steps = Steps(_progress())
    stats, cached = steps.run("fid-stats", lambda: reference_stats(
        source, out, features, samples=samples, seed=seed, trust_pickle=trust_pickle, progress=steps.progress("fid-stats"),
    ))
    origin = f" (features from the cache in {cache_dir(CACHE_KIND)})" if cached else ""
    typer.echo(f"{out}: {stats.count} images, {stats.extractor} {stats.extractor_sha256[:12]}, {stats.mu.size}-d features{origin}")


def _fail_on_budgets(checks: dict, where) -> None:
    """Exit 3 when a budget failed; else exit 4 when one cannot be judged yet (a TensorRT release's latency)."""
    from compressor.release.budgets import BudgetFailed, BudgetPending, failures, pending

    failed, waiting = failures(checks), pending(checks)
    if failed:
        raise BudgetFailed(f"{where}: budget failed: {'; '.join(failed)} (the release is written; see its report)")
    if waiting:
        raise BudgetPending(f"{where}: cannot judge {'; '.join(waiting)}")


@app.command()
def sensitivity(
    checkpoint: Checkpoint,
    target: Annotated[
        str,
        typer.Option(metavar="NAME", autocompletion=_complete_target,
                     help="Target name, alias or YAML path: its precisions and channel multiple."),
    ] = "cpu",
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="DIR", help="Folder for sensitivity.json and the heatmap sensitivity.png.")
    ] = Path("sensitivity"),
    ratios: Annotated[
        str, typer.Option(metavar="R,R,...", help="Fractions of each group's channels cut, comma-separated.")
    ] = "0.25,0.5,0.75",
    samples: Annotated[int, typer.Option(metavar="N", min=8, help="Prior samples each setting is scored on.")] = 64,
    seed: Annotated[int, typer.Option(metavar="N", help="Seed of the prior samples.")] = 0,
    fid: Annotated[bool, typer.Option("--fid", help="Also score every setting with FID (Inception: minutes, not seconds).")] = False,
    fid_weights: FidWeights = None,
    arch: Arch = None,
    card: Card = None,
    trust_pickle: TrustPickle = False,
) -> None:
    """How much the output suffers when only one channel group is cut, or one layer rounded (cached; a rerun is instant)."""
    from compressor.api import Steps
    from compressor.checkpoint import load_checkpoint
    from compressor.config import load_target
    from compressor.distributed import world
    from compressor.errors import UsageError
    from compressor.evaluate.reference_stats import make_extractor
    from compressor.release.sensitivity_view import block_rows, channel_rows, precision_rows, reading, write_outputs
    from compressor.sensitivity import analyse
    from compressor.stages.sensitivity import check_ratios

    try:
        fractions = check_ratios([float(text) for text in ratios.split(",")], "--ratios")
    except ValueError as exc:
        raise UsageError(f"--ratios '{ratios}': {exc}; e.g. --ratios 0.25,0.5,0.75") from None
    resolved = load_target(target)
    extractor = make_extractor("inception", str(fid_weights) if fid_weights else None) if fid or fid_weights else None
    loaded = load_checkpoint(checkpoint, arch=arch, card=card, trust_pickle=trust_pickle)
    ranks = world()  # under torchrun the ranks share the settings out and rank 0 writes the table
    ranks.agree(f"{loaded.sha256}:{resolved.model_dump_json()}:{fractions}:{samples}:{seed}:{fid}", "the sweep's inputs",
                "launch every rank with the same command and files")
    steps = Steps(_progress() if ranks.is_main else None)
    table = steps.run("sensitivity", lambda: analyse(
        loaded.model, loaded.card, resolved, ratios=fractions, samples=samples, seed=seed, progress=steps.progress("sensitivity"),
        fid=extractor,
    ))
    if not ranks.is_main:
        return
    for header, rows in (channel_rows(table), block_rows(table), precision_rows(table)):
        if rows:
            _print_table(header, rows)
    typer.echo(reading(table))
    written = write_outputs(table, out)
    cached = " (cached)" if table["cached"] else f" in {table['seconds']:.0f} s"
    typer.echo(f"measured{cached}; wrote {', '.join(str(path) for path in written)}")


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*header)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


@app.command()
def inspect(
    checkpoint: Checkpoint,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    arch: Arch = None,
    card: Card = None,
    trust_pickle: TrustPickle = False,
) -> None:
    """Parameters, MACs, fp32 size and a per-layer table of a checkpoint."""
    from compressor.checkpoint import load_checkpoint
    from compressor.summary import format_table, summarize

    loaded = load_checkpoint(checkpoint, arch=arch, card=card, trust_pickle=trust_pickle)
    summary = summarize(loaded.model, loaded.card)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("layer", "type", "output shape", "params", "MACs", title=f"{summary['name']} ({loaded.format})")
    for row in format_table(summary):
        table.add_row(*row)
    console = Console()
    console.print(table)
    console.print(
        f"parameters {summary['parameters']:,}  MACs/sample {summary['macs_per_sample']:,}  "
        f"fp32 size {summary['fp32_bytes'] / 1e6:.2f} MB"
    )


@targets_app.callback(invoke_without_command=True)
def _targets_default(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        _list_bundled("targets")


@targets_app.command("list")
def targets_list() -> None:
    """List the bundled targets with their aliases and runtime."""
    _list_bundled("targets")


@targets_app.command("show")
def targets_show(
    name: Annotated[str, typer.Argument(autocompletion=_complete_target, help="Target name, alias or YAML path.")],
) -> None:
    """Print a target, every default filled in."""
    from compressor.config import load_target

    typer.echo(json.dumps(load_target(name).model_dump(mode="json"), indent=2))


@targets_app.command("schema")
def targets_schema() -> None:
    """Print the JSON Schema of a target file (for editor completion and validation)."""
    from compressor.config import Target

    typer.echo(json.dumps(Target.model_json_schema(), indent=2))


@profiles_app.callback(invoke_without_command=True)
def _profiles_default(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        _list_bundled("profiles")


@profiles_app.command("list")
def profiles_list() -> None:
    """List the bundled profiles and their stages."""
    _list_bundled("profiles")


@profiles_app.command("show")
def profiles_show(
    name: Annotated[str, typer.Argument(autocompletion=_complete_profile, help="Profile name or YAML path.")],
) -> None:
    """Print a profile, every default filled in."""
    from compressor.config import load_profile

    typer.echo(json.dumps(load_profile(name).model_dump(mode="json"), indent=2))


@profiles_app.command("schema")
def profiles_schema() -> None:
    """Print the JSON Schema of a profile file (for editor completion and validation)."""
    from compressor.config import Profile

    typer.echo(json.dumps(Profile.model_json_schema(), indent=2))


@app.command()
def doctor() -> None:
    """Which runtimes and optional extras can be used on this machine, and why not."""
    from compressor.doctor import check_all

    failing = 0
    for name, reason in check_all().items():
        typer.echo(f"{'ok ' if reason is None else 'no '} {name}{'' if reason is None else ': ' + reason}")
        failing += reason is not None
    typer.echo(f"{failing} of the optional parts cannot be used here" if failing else "everything is usable here")


def _list_bundled(kind: str) -> None:
    from compressor.config import bundled, load_profile, load_target

    files = bundled(kind)
    for name in sorted({path.stem for path in files.values()}):
        if kind == "targets":
            target = load_target(name)
            aliases = f" (alias {', '.join(target.aliases)})" if target.aliases else ""
            typer.echo(f"{name}{aliases}: {target.runtime.kind}, {'/'.join(target.precisions)}. {target.description}")
        else:
            profile = load_profile(name)
            typer.echo(f"{name}: stages {[s.kind for s in profile.stages]}. {profile.description}")


def _progress():
    """The progress display on stderr: a bar with an ETA per running step in a terminal, plain lines in a CI log."""
    from compressor.progress import ConsoleProgress

    return ConsoleProgress()


def _print_outcome(result) -> None:
    from compressor.release.budgets import limit_text, value_text, verdict

    artifacts = result.manifest["artifacts"]
    for name, record in artifacts.items():
        parity = record["parity"]
        simulated = f" ({record['numerics']})" if "numerics" in record else ""
        typer.echo(
            f"{name} ({record['precision']}): {record['bytes'] / 1e6:.2f} MB, vs torch: PSNR {parity['psnr_db']:.1f} dB, "
            f"max abs error {parity['max_abs_error']:.2e}{simulated}"
        )
        if "pending" in record["latency"]:
            typer.echo(f"  latency pending: {record['latency']['pending']}")
        for batch, stats in record["latency"].get("batches", {}).items():
            typer.echo(f"  batch {batch}: median {stats['median_ms']:.3f} ms, p90 {stats['p90_ms']:.3f} ms")
        if "per_image" in record["latency"]:
            image = record["latency"]["per_image"]
            typer.echo(f"  one image ({image['model_calls']} calls, batch 1): median {image['median_ms']:.1f} ms, "
                       f"p90 {image['p90_ms']:.1f} ms")
        typer.echo(f"  quality: {_quality_line(record.get('quality', {}))}")
    for name, check in result.budgets.items():
        typer.echo(f"budget {name}: {value_text(check)} ({limit_text(check)}) {verdict(check)}")
    typer.echo(f"verdict: {result.manifest.get('verdict')}")
    typer.echo(f"release: {result.release_dir}")
    typer.echo(f"report:  {result.report} (and {result.report_html.name}, with plots and the gallery)")


def _quality_line(quality: dict) -> str:
    """'PSNR 44.1 dB, SSIM 0.998, FD-surrogate 0.01 (+0.00), FID 3.2 (+0.4)' or why a metric is missing."""
    parts = [f"PSNR {quality['psnr_db']:.1f} dB"] if "psnr_db" in quality else []
    if "ssim" in quality:
        parts.append(f"SSIM {quality['ssim']:.4f}")
    for key, label in (("fd_surrogate", "FD-surrogate"), ("fid", "FID")):
        entry = quality.get(key) or {}
        if "value" in entry:
            parts.append(f"{label} {entry['value']:.3g} ({entry['delta']:+.3g} vs the reference model)")
        elif entry.get("reason"):
            parts.append(f"no {label}: {entry['reason']}")
    return ", ".join(parts) or quality.get("reason", "not measured")


def main() -> None:
    """Entry point: run the app, turning our errors into one line and an exit code.

    Typer itself turns flag errors into usage messages with exit code 2, and Ctrl-C (or SIGTERM) into exit 130.
    """
    import signal
    import warnings

    from compressor.errors import CompressorError, first_line

    # CI systems cancel a job with SIGTERM: treat it like Ctrl-C, so the partial release is cleaned up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    # torch's own pytree deprecation, raised while loading torch.export files; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
    _show_warnings_as_lines()
    try:
        app(prog_name="compressor")  # also under `python -m compressor`: usage lines and the completion variable
    except CompressorError as exc:
        if _state["debug"]:
            traceback.print_exc()
        typer.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug or a library failure we did not foresee: still one line, exit 1
        if _state["debug"]:
            traceback.print_exc()
        typer.echo(f"error: unexpected {type(exc).__name__}: {first_line(exc)}; rerun with --debug for the traceback", err=True)
        sys.exit(1)
    finally:
        # A torchrun rank leaves its process group. A command that never joined one never imported the module,
        # and importing it now would load torch: seconds added to `--version` and `-h`.
        if "compressor.distributed" in sys.modules:
            sys.modules["compressor.distributed"].leave()


def _show_warnings_as_lines() -> None:
    """Library code logs warnings (and notes, such as the expected cost of FID) to the 'compressor' logger; the CLI
    prints them through the progress display's console, as 'warning: ...' lines above any running bar."""
    import logging

    from compressor.progress import LogToConsole

    logger = logging.getLogger("compressor")
    logger.addHandler(LogToConsole())
    logger.setLevel(logging.INFO)
    logger.propagate = False  # a library that configures the root logger would print each warning twice
