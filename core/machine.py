"""What machine this is: CPU model, core count and the ISA flags that decide inference paths (torch-free)."""

from __future__ import annotations

import os
import platform
from functools import lru_cache


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, object]:
    """CPU model, core count and the ISA flags that matter for inference (AVX2, AVX-512, VNNI, bf16, AMX)."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and model in ("unknown", "", platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")
    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "isa": [f for f in wanted if f in flags],
        "bf16_hardware": bool({"avx512_bf16", "amx_bf16"} & flags),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def describe() -> str:
    info = cpu_info()
    return f"{info['cpu_model']} ({info['logical_cpus']} logical CPUs; {', '.join(info['isa']) or 'no AVX2'})"
