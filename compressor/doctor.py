"""What `compressor doctor` checks: each runtime and optional extra, usable here or why not."""

from __future__ import annotations

import importlib.util


def check_all() -> dict[str, str | None]:
    """Name -> None when usable, else the reason (missing package or hardware) and how to fix it."""
    from compressor.runtimes import RUNTIMES

    checks: dict[str, str | None] = {f"runtime {name}": runtime.unavailable_reason() for name, runtime in RUNTIMES.items()}
    checks.update(_targets())
    checks["cuda gpu"] = _cuda_reason()
    checks["extra qat (nncf)"] = None if importlib.util.find_spec("nncf") else "NNCF is not installed; pip install -e '.[qat]'"
    checks["extra diffusion (diffusers)"] = None if importlib.util.find_spec("diffusers") else (
        "diffusers is not installed: model cards with a sampler (diffusion models) cannot run; pip install -e '.[diffusion]'")
    checks["int8 vnni"] = _vnni_reason()
    checks["fid weights"] = _fid_reason()
    return checks


def _targets() -> dict[str, str | None]:
    """Per bundled target: None when everything it needs is here, else what it can and cannot do here."""
    from compressor.config import bundled, load_target
    from compressor.hostcpu import cpu_flags, has_vnni
    from compressor.runtimes import RUNTIMES

    checks = {}
    for name in sorted({path.stem for path in bundled("targets").values()}):
        target = load_target(name)
        runtime = RUNTIMES[target.runtime.kind]
        reason, left = runtime.unavailable_reason(), runtime.left_for_the_device()
        if reason:
            checks[f"target {name}"] = f"cannot run here: {reason}"
        elif left:
            checks[f"target {name}"] = left
        elif target.runtime.kind == "onnxruntime" and target.quantization.weight_bits == 8 and not has_vnni(cpu_flags()):
            checks[f"target {name}"] = "runs here, but this CPU has no VNNI: its 8-bit int8 weights saturate here"
        else:
            checks[f"target {name}"] = None
    return checks


def _fid_reason() -> str | None:
    """Only locates the file: loading the 87 MB Inception takes seconds, and a run checks it anyway."""
    from compressor.evaluate.fid import FidWeightsError, find_weights

    try:
        find_weights()
    except FidWeightsError as exc:
        return exc.message + " (runs then report FD-surrogate, PSNR and SSIM, and say why FID is missing)"
    return None


def _vnni_reason() -> str | None:
    from compressor.hostcpu import cpu_flags, has_vnni

    flags = cpu_flags()
    if has_vnni(flags):
        return None
    return (
        f"this CPU has no VNNI (flags: {', '.join(sorted(flags)) or 'none found'}): int8 artifacts with 8-bit weights "
        "(target cpu-x86-vnni) saturate here; target cpu-x86 uses 7-bit weights and is exact"
    )


def _cuda_reason() -> str | None:
    import torch

    if torch.cuda.is_available():
        return None
    return "torch sees no CUDA GPU (the CPU build of torch, or no GPU on this machine)"
