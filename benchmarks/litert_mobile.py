"""LiteRT int8 for phones, in one run: size, closeness to torch and XNNPACK latency of each way to make the `.tflite`.

For each demo model (examples/digits-dcgan, examples/digits-vae), every variant below is built here and timed on
this host's CPU with the ai-edge-litert interpreter and its XNNPACK delegate, at batch 1 and 1 and 2 threads:

- `fp32`: the model as the user wrote it (BatchNorm folded), converted by litert-torch: the fp32 `.tflite` a user
  would make;
- `fp32 rewritten`: the same after the mobile target's rewrites (the release's baseline; the head rewrites
  speed up fp32 too);
- `int8 release`: what `compressor run --target mobile` ships (rewrites, litert-quantizer static_wi8_ai8,
  ranges from the 99.999th percentile of 256 prior samples);
- `int8 no linear rewrite`: the same without linear_to_convtranspose (per-row scales on the projection);
- `int8 no head rewrite`: the same without narrow_convtranspose_to_conv (a 1-channel ConvTranspose head left to
  XNNPACK as it is);
- `int8 + narrow_conv_to_blocks`: the release plus ONNX Runtime's rewrite of a stride-1 conv head to few channels;
- `int8 speed-first`: the release plus upsample_conv_to_convtranspose (nearest Upsample + 3x3 conv as one
  ConvTranspose2d(4, 2, 1): 4/9 of the work, but 16/9 the weights) and narrow_conv_to_blocks;
- `int8 ORT decompositions`: the same with ONNX Runtime's phase decompositions of ConvTranspose added;
- `int8 without GroupNorm (timing only)`: for models with GroupNorm, the release with every GroupNorm replaced by
  nothing: not a usable model (its PSNR says so), but its latency says what GroupNorm's int8 ops cost;
- `int8 quantizer's own calibration`: litert-quantizer's default moving-average ranges (what calling it bare gives);
- `int8 PT2E`: litert-torch's own PT2E path (torchao's prepare/convert_pt2e with PT2EQuantizer's symmetric
  per-channel config, then converted), what its docs show first;
- with `--onnx2tf DIR`: `onnx2tf fp32` and `onnx2tf int8`, the files onnx2tf made from the ONNX export (BatchNorm
  folded) in DIR (`<model>_onnx2tf_{fp32,int8}.tflite`, model `dcgan` or `vae`). onnx2tf needs TensorFlow, so
  they are made beforehand in a separate venv (onnx2tf 1.29.24, tensorflow-cpu 2.21, installed with
  `--no-deps`: it pins tensorflow 2.19):
      onnx2tf -i vae.onnx -o out -ois z:1,16 -oiqt -cind z calib.npy "[0.0]" "[1.0]"
  For the DCGAN that command writes a wrong model without an error (9.9 dB, even in fp32: the Reshape to NCHW
  is read as NHWC by the ConvTranspose after it); it works only with a hand-written parameter replacement:
      -prf replace.json  with {"format_version": 1, "operations": [{"op_name": "node_Reshape_3",
        "param_target": "outputs", "param_name": "view", "post_process_transpose_perm": [0, 2, 3, 1]}]}

Latency ratios are given against both fp32 files. Latency is measured in rounds: each round times every variant once (median of `--runs` invokes after a warm-up),
and a variant's figure is the median over rounds, so a burst of load on this shared machine hits all of them. PSNR
is against the torch model on 256 seeded latents; the FID of the release is measured by `compressor run` itself.

    python benchmarks/litert_mobile.py [--models digits-dcgan,digits-vae] [--rounds 7] [--runs 300] [--out DIR]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from compressor.checkpoint import load_checkpoint
from compressor.evaluate.latency import time_callable
from compressor.evaluate.paired import psnr
from compressor.hostcpu import cpu_flags, cpu_model
from compressor.modelcard import sample_inputs
from compressor.rewrites import REWRITES
from compressor.runtimes import litert_quantize
from compressor.runtimes.litert import _from_model, _interpreter, _one_sample_each, _to_model
from compressor.runtimes.litert_convert import convert, import_litert_torch
from compressor.runtimes.litert_graph import describe, read_ops

ROOT = Path(__file__).resolve().parents[1]
MOBILE_REWRITES = ["fold_batchnorm", "linear_to_convtranspose", "narrow_convtranspose_to_conv"]
ORT_DECOMPOSITIONS = ["decompose_convtranspose", "upsample_conv_to_phases"]  # on top of MOBILE_REWRITES
SPEED_FIRST = ["upsample_conv_to_convtranspose", "narrow_conv_to_blocks"]  # likewise
THREADS = (1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits-dcgan,digits-vae")
    parser.add_argument("--rounds", type=int, default=7, help="timing rounds (each times every variant once)")
    parser.add_argument("--runs", type=int, default=300, help="invokes per variant per round")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--onnx2tf", type=Path, help="folder of onnx2tf's files for the demos (see above)")
    args = parser.parse_args()
    results = {
        "machine": cpu_model(), "cpu_flags": sorted(cpu_flags()), "cores": len(os.sched_getaffinity(0)),
        "date": datetime.date.today().isoformat(), "rounds": args.rounds, "runs": args.runs, "models": {},
    }
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models.split(","):
            results["models"][name] = measure(name, Path(scratch) / name, args.rounds, args.runs, args.onnx2tf)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "litert_mobile.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "litert_mobile.md").write_text(table(results))
    print(table(results))


def measure(name: str, folder: Path, rounds: int, runs: int, onnx2tf: Path | None) -> dict:
    folder.mkdir(parents=True)
    loaded = load_checkpoint(ROOT / "examples" / name)
    model, card = loaded.model.eval(), loaded.card
    example = tuple(sample_inputs(card, 2, seed=1).values())
    rewritten = _rewrite(model, MOBILE_REWRITES, example)
    decomposed = _rewrite(model, MOBILE_REWRITES + ORT_DECOMPOSITIONS, example)
    calibration = _one_sample_each([{k: v.numpy() for k, v in sample_inputs(card, 256, seed=1000).items()}], card)
    fp32 = convert(model, card, folder / "fp32.tflite")
    fp32_rewritten = convert(rewritten, card, folder / "fp32-rewritten.tflite")
    folded = convert(_rewrite(model, [r for r in MOBILE_REWRITES if r != "linear_to_convtranspose"], example), card,
                     folder / "fp32-folded.tflite")
    headless = convert(_rewrite(model, ["fold_batchnorm", "linear_to_convtranspose"], example), card,
                       folder / "fp32-no-head-rewrite.tflite")
    blocked = convert(_rewrite(model, MOBILE_REWRITES + ["narrow_conv_to_blocks"], example), card,
                      folder / "fp32-blocked-head.tflite")
    speedy = convert(_rewrite(model, MOBILE_REWRITES + SPEED_FIRST, example), card, folder / "fp32-speed-first.tflite")
    fp32_decomposed = convert(decomposed, card, folder / "fp32-decomposed.tflite")
    files = {  # variant -> (file, or why it could not be made; how its tensor names spell the torch modules)
        "fp32": (fp32.path, fp32.scopes),
        "fp32 rewritten": (fp32_rewritten.path, fp32_rewritten.scopes),
        "int8 release": (_ours(fp32_rewritten.path, calibration, folder / "int8.tflite"), fp32_rewritten.scopes),
        "int8 no linear rewrite": (_ours(folded.path, calibration, folder / "int8-no-linear-rewrite.tflite"), folded.scopes),
        "int8 no head rewrite": (_ours(headless.path, calibration, folder / "int8-no-head-rewrite.tflite"), headless.scopes),
        "int8 + narrow_conv_to_blocks": (_ours(blocked.path, calibration, folder / "int8-blocked-head.tflite"), blocked.scopes),
        "int8 speed-first": (_ours(speedy.path, calibration, folder / "int8-speed-first.tflite"), speedy.scopes),
        "int8 ORT decompositions": (_ours(fp32_decomposed.path, calibration, folder / "int8-decomposed.tflite"),
                                    fp32_decomposed.scopes),
        "int8 quantizer's own calibration": (
            _quantizer_default(fp32_rewritten.path, calibration, folder / "int8-moving-average.tflite"), fp32_rewritten.scopes),
        "int8 PT2E": (_pt2e(_rewrite(model, ["fold_batchnorm"], example), calibration, folder / "int8-pt2e.tflite"), {}),
    }
    if any(isinstance(module, torch.nn.GroupNorm) for module in model.modules()):
        ablated = convert(_without_groupnorm(rewritten), card, folder / "fp32-no-groupnorm.tflite")
        files["int8 without GroupNorm (timing only)"] = (_ours(ablated.path, calibration, folder / "int8-no-groupnorm.tflite"),
                                                         ablated.scopes)
    if onnx2tf is not None:
        short = name.removeprefix("digits-")
        for precision in ("fp32", "int8"):
            made = onnx2tf / f"{short}_onnx2tf_{precision}.tflite"
            files[f"onnx2tf {precision}"] = (made if made.is_file() else f"{made} not found", {})
    latents = sample_inputs(card, 256, seed=7)
    with torch.no_grad():
        reference = model(*latents.values()).numpy()
    variants = {}
    for variant, (path, scopes) in files.items():
        if isinstance(path, str):  # the variant could not be built: why
            variants[variant] = {"failed": path}
            continue
        ops = describe(read_ops(path, scopes))
        variants[variant] = {
            "bytes": path.stat().st_size,
            "psnr_db": round(float(psnr(reference, _outputs(path, latents, next(iter(card.outputs.values())).shape), 2.0)), 2),
            "float_ops": ops["ops_by_precision"]["float"], "int8_ops": ops["ops_by_precision"]["int8"],
            "conversions": ops["conversions"],
        }
    timed = {variant: path for variant, (path, _) in files.items() if not isinstance(path, str)}
    for threads in THREADS:
        medians = _rounds(timed, card, threads, rounds, runs)
        for variant, values in medians.items():
            variants[variant][f"ms_{threads}t"] = round(float(np.median(values)), 4)
            variants[variant][f"ms_{threads}t_rounds"] = [round(v, 4) for v in values]
    for variant in timed:
        entry = variants[variant]
        entry["size_vs_fp32"] = round(entry["bytes"] / variants["fp32"]["bytes"], 4)
        for t in THREADS:
            entry[f"latency_vs_fp32_{t}t"] = round(entry[f"ms_{t}t"] / variants["fp32"][f"ms_{t}t"], 4)
            entry[f"latency_vs_fp32_rewritten_{t}t"] = round(entry[f"ms_{t}t"] / variants["fp32 rewritten"][f"ms_{t}t"], 4)
    return {"variants": variants}


def _rewrite(model, names, example):
    model = copy.deepcopy(model)
    for name in names:
        model, _ = REWRITES[name](model, example)
    return model


def _without_groupnorm(model):
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, torch.nn.GroupNorm):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, torch.nn.Identity())
    return model


def _ours(fp32: Path, calibration, out: Path) -> Path:
    calibrated = litert_quantize.calibrate(fp32, calibration, "percentile", 99.999)
    return litert_quantize.quantize(calibrated, out, [], float_io=False)


def _quantizer_default(fp32: Path, calibration, out: Path) -> Path:
    from litert_quantizer import quantizer, recipe

    qt = quantizer.Quantizer(str(fp32))
    qt.load_quantization_recipe(recipe.static_wi8_ai8())
    qt.quantize(qt.calibrate({"serving_default": calibration})).export_model(str(out), overwrite=True)
    return out


def _pt2e(model, calibration, out: Path) -> Path | str:
    """litert-torch's documented PT2E path; a string says why it failed."""
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    litert_torch = import_litert_torch()
    example = tuple(torch.from_numpy(array) for array in calibration[0].values())
    try:
        exported = torch.export.export(model, example).module()
        quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
            pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
        prepared = quantize_pt2e.prepare_pt2e(exported, quantizer)
        with torch.no_grad():
            for sample in calibration:
                prepared(*(torch.from_numpy(array) for array in sample.values()))
        converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
        litert_torch.convert(converted, example, quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(out))
    except Exception as exc:  # noqa: BLE001 - recorded in the results as what a user would hit
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return out


def _outputs(path: Path, latents: dict[str, torch.Tensor], shape: list[int]) -> np.ndarray:
    interpreter = _interpreter(path, 1)
    runner = interpreter.get_signature_runner()
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    names, (output, detail) = list(inputs), next(iter(outputs.items()))  # onnx2tf's files name them after the ONNX
    results = []
    arrays = [t.numpy() for t in latents.values()]
    for i in range(len(arrays[0])):
        got = runner(**{name: _to_model(a[i : i + 1], inputs[name]) for name, a in zip(names, arrays)})
        y = _from_model(got[output], detail)
        if y.shape[1:] != tuple(shape) and y.ndim == 4 and y.shape[1:] == (*shape[1:], shape[0]):
            y = y.transpose(0, 3, 1, 2)  # onnx2tf writes NHWC outputs
        results.append(y)
    return np.concatenate(results)


def _rounds(files: dict[str, Path], card, threads: int, rounds: int, runs: int) -> dict[str, list[float]]:
    interpreters = {}
    for variant, path in files.items():
        interpreter = _interpreter(path, threads)
        inputs = interpreter.get_signature_runner().get_input_details()
        for detail, tensor in zip(inputs.values(), sample_inputs(card, 1, seed=3).values()):
            interpreter.set_tensor(detail["index"], _to_model(tensor.numpy(), detail))
        interpreters[variant] = interpreter
    medians: dict[str, list[float]] = {variant: [] for variant in files}
    for _ in range(rounds):
        for variant, interpreter in interpreters.items():
            medians[variant].append(time_callable(interpreter.invoke, 30, runs)["median_ms"])
    return medians


def table(results: dict) -> str:
    lines = [
        "# LiteRT int8 on this host's CPU (XNNPACK, batch 1)", "",
        f"CPU: {results['machine']}, flags: {', '.join(results['cpu_flags'])}, {results['cores']} cores; {results['date']}; "
        f"median of {results['rounds']} rounds of {results['runs']} invokes. Latency ratios: `x fp32` against the "
        "user's model converted as it is, `x rw` against the rewritten fp32 (the release's baseline).", "",
    ]
    for name, model in results["models"].items():
        lines += [f"## {name}", "",
                  "| variant | size KB | x fp32 | PSNR dB | float ops | ms 1t | x fp32 | x rw | ms 2t | x fp32 | x rw |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for variant, entry in model["variants"].items():
            if "failed" in entry:
                lines.append(f"| {variant} | failed: {entry['failed']} | | | | | | | | | |")
                continue
            floats = ", ".join(f"{op} x{n}" for op, n in entry["float_ops"].items()) or "none"
            lines.append(
                f"| {variant} | {entry['bytes'] / 1024:.1f} | {entry['size_vs_fp32']:.3f} | {entry['psnr_db']:.1f} | {floats} | "
                f"{entry['ms_1t']:.3f} | {entry['latency_vs_fp32_1t']:.3f} | {entry['latency_vs_fp32_rewritten_1t']:.3f} | "
                f"{entry['ms_2t']:.3f} | {entry['latency_vs_fp32_2t']:.3f} | {entry['latency_vs_fp32_rewritten_2t']:.3f} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
