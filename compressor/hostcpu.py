"""What this machine's CPU can do for int8: the x86 vector extensions that decide how ONNX Runtime's int8
kernels run (read from /proc/cpuinfo; empty elsewhere).

Without VNNI, x86 int8 kernels multiply uint8 x int8 pairs and add them in int16 (AVX2's vpmaddubsw),
which saturates with full 8-bit weights; targets say which weight range they use (config.py).
"""

from __future__ import annotations

from pathlib import Path

INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
# What the manifest records of the host: the vector and matrix extensions that decide which kernels a runtime
# picks (x86 `flags`, Arm `Features`), so a latency figure can be read against the hardware that produced it.
# The full list (100+ flags) would bury these among ones no kernel choice depends on.
KERNEL_FLAGS = (
    "sse4_2", "avx", "fma", "f16c", *INT8_FLAGS, "avx512bw", "avx512vl", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_bf16", "asimd", "asimddp", "i8mm", "bf16", "sve", "sve2",
)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The int8-relevant flags of the first CPU listed (all cores of a machine share them)."""
    return set(kernel_flags(cpuinfo)) & set(INT8_FLAGS)


def kernel_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The KERNEL_FLAGS the first CPU listed has, in KERNEL_FLAGS' order (x86 `flags` or Arm `Features`)."""
    return _kernel_flags(_first_fields(cpuinfo))


def host_record(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, object]:
    """The manifest's `host`: CPU model, its kernel-relevant flags, logical cores and those this process may use."""
    import os

    fields = _first_fields(cpuinfo)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_model": _model(fields), "cpu_flags": _kernel_flags(fields), "cores": os.cpu_count(),
            "cores_usable": usable}


def _kernel_flags(fields: dict[str, str]) -> list[str]:
    found = set((fields.get("flags") or fields.get("Features") or "").split())
    return [flag for flag in KERNEL_FLAGS if flag in found]


def has_vnni(flags: set[str]) -> bool:
    return bool(flags & {"avx512_vnni", "avx_vnni"})


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name ("AMD EPYC", ...), or the machine type where /proc/cpuinfo has none."""
    return _model(_first_fields(cpuinfo))


def _model(fields: dict[str, str]) -> str:
    import platform

    return fields.get("model name") or platform.machine() or "unknown CPU"


def _first_fields(cpuinfo: Path) -> dict[str, str]:
    """Each `field : value` of /proc/cpuinfo, its first value (the first CPU listed; all cores share them), read
    once; empty where there is no such file."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_description() -> str:
    """Model name and int8 flags, e.g. "AMD EPYC, avx2 avx512_vnni": what a latency figure was measured on."""
    flags = " ".join(sorted(cpu_flags())) or "no int8 flags found"
    return f"{cpu_model()}, {flags}"
