"""The host's CPU as it matters for timings and float results, read from /proc/cpuinfo without TensorFlow."""

from __future__ import annotations

from pathlib import Path

from fmnist.kernels import KERNEL_ENVIRONMENT

# TensorFlow's DefaultOneDnnPolicy: oneDNN on by default where the CPU has any of these (all three AMX ones).
ONEDNN_DEFAULT_FLAGS = ({"avx512_vnni"}, {"avx512_bf16"}, {"avx_vnni"}, {"amx_tile", "amx_int8", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")


def _first_processor(cpuinfo: Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in cpuinfo.read_text().splitlines():
        if not line.strip():
            break  # the first processor is enough
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def describe_kernels(cpuinfo: Path = CPUINFO) -> str:
    """The pinned settings, and what TensorFlow would choose on this CPU without them (for timings)."""
    flags = set(_first_processor(cpuinfo).get("flags", "").split())
    default = "on" if any(needed <= flags for needed in ONEDNN_DEFAULT_FLAGS) else "off"
    pinned = " ".join(f"{name}={KERNEL_ENVIRONMENT[name]}" for name in ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA"))
    return f"stages pin {pinned}; TensorFlow's default on this CPU: oneDNN {default}"


def describe_host(cpuinfo: Path = CPUINFO) -> str:
    """The CPU as it matters for timings and float results: model, family/model, vector extensions, L1d.

    For example "AMD EPYC (family 25, model 17): avx2 avx512f avx512_vnni ..., L1d 32K".
    """
    fields = _first_processor(cpuinfo)
    flags = fields.get("flags", "").split()
    vector = [flag for flag in flags if flag == "avx2" or flag == "fma" or flag.startswith("avx512")]
    l1d = Path("/sys/devices/system/cpu/cpu0/cache/index0/size")
    cache = f", L1d {l1d.read_text().strip()}" if l1d.is_file() else ""
    name = fields.get("model name", "unknown CPU")
    family = f" (family {fields['cpu family']}, model {fields['model']})" if "cpu family" in fields else ""
    return f"{name}{family}: {' '.join(vector) or 'no avx2, no avx512'}{cache}"
