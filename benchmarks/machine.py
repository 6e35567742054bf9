"""One line that names the machine a figure was measured on: CPU model, cores and the features
that decide CPU speed (AVX512-BF16, AMX, AVX2), for every benchmark's JSON."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    flags = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in flags.splitlines() if "model name" in line), "?")
    extra = [f for f in ("avx512_bf16", "amx_tile", "avx2") if f in flags]
    return f"{model}, {os.cpu_count()} cores, {' '.join(extra)}, {platform.python_version()}"
