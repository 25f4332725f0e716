"""What this machine's CPU can do for int8: the x86 vector extensions that decide how ONNX Runtime's int8
kernels run (read from /proc/cpuinfo; empty elsewhere).

Without VNNI, x86 int8 kernels multiply uint8 x int8 pairs and add them in int16 (AVX2's vpmaddubsw),
which saturates with full 8-bit weights; targets say which weight range they use (config.py).
"""

from __future__ import annotations

from pathlib import Path

INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The int8-relevant flags of the first CPU listed (all cores of a machine share them)."""
    flags = _first_field(cpuinfo, "flags")
    return set(flags.split()) & set(INT8_FLAGS) if flags else set()


def has_vnni(flags: set[str]) -> bool:
    return bool(flags & {"avx512_vnni", "avx_vnni"})


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name ("AMD EPYC", ...), or the machine type where /proc/cpuinfo has none."""
    import platform

    return _first_field(cpuinfo, "model name") or platform.machine() or "unknown CPU"


def _first_field(cpuinfo: Path, field: str) -> str | None:
    """The value of the first `field : value` line of /proc/cpuinfo, or None (no such line, or no such file)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(field)), None)


def cpu_description() -> str:
    """Model name and int8 flags, e.g. "AMD EPYC, avx2 avx512_vnni": what a latency figure was measured on."""
    flags = " ".join(sorted(cpu_flags())) or "no int8 flags found"
    return f"{cpu_model()}, {flags}"
