"""Choosing the compute dtype a device can actually run fast.

bf16 pays off on CPUs only with native support (AVX512-BF16 or AMX); elsewhere PyTorch falls
back to scalar kernels that are one to two orders of magnitude slower than float32 (measured
130x for a matmul on an AVX2-only EPYC), so asking for bf16 there is almost always a mistake.
"""

from __future__ import annotations

import logging

import torch

__all__ = ["DTYPES", "cpu_has_native_bf16", "dtype_name", "parse_dtype", "resolve_compute_dtype"]

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}") from None


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def cpu_has_native_bf16() -> bool:
    """True where oneDNN runs bf16 kernels natively (AVX512-BF16 / AMX)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_compute_dtype(
    device: torch.device, dtype: str | torch.dtype, strict: bool = False
) -> torch.dtype:
    """The dtype to autocast to on `device`; reduced precision without hardware support falls back
    to float32 with a warning unless `strict`."""
    wanted = parse_dtype(dtype)
    if device.type != "cpu" or wanted == torch.float32 or strict:
        return wanted
    if wanted == torch.bfloat16 and cpu_has_native_bf16():
        return wanted
    log.warning(
        "this CPU has no native %s support (no AVX512-BF16/AMX); it would run many times slower than "
        "float32, so computing in float32 instead (pass strict_dtype to force it)",
        dtype_name(wanted),
    )
    return torch.float32
