"""Seconds per image for torch fp32 / bf16 and onnxruntime (fp32; fp16 on CUDA) on the same
model and input in one run, and each one's largest logit difference to torch fp32; prints JSON.

The model is exported here (once per precision, which takes minutes on a small CPU) unless
--onnx gives a file exported from the same weights. Every case sees the same normalised batch;
the timing is the median of --repeats forwards after --warmup.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from machine import machine  # benchmarks/machine.py, beside this file

from birefnet_core import load_model
from birefnet_core.onnx_export import OnnxExportSettings, export_onnx
from birefnet_core.onnx_runtime import OnnxRuntimeModel
from birefnet_core.precision import cpu_has_native_bf16


def _timed(forward: Callable[[], torch.Tensor], repeats: int, warmup: int) -> tuple[float, torch.Tensor]:
    for _ in range(warmup):
        forward()
    timings, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = forward()
        if out.is_cuda:
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings), out.float().cpu()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", default="demo", help="weights source (default: the bundled demo model)")
    parser.add_argument("--variant", default="demo")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--onnx", help="an fp32 export of the same weights (skips exporting)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    device = torch.device(args.device)
    model = load_model(args.weights, variant=args.variant).eval()
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    results: dict[str, dict[str, float]] = {}
    cases: list[tuple[str, Callable[[], Callable[[], torch.Tensor]]]] = []

    def torch_case(dtype: torch.dtype) -> Callable[[], torch.Tensor]:
        placed = model.to(device=device, dtype=dtype)
        batch = x.to(device=device, dtype=dtype)
        return lambda: placed(batch)

    def onnx_case(fp16: bool) -> Callable[[], torch.Tensor]:
        data = Path(args.onnx).read_bytes() if args.onnx and not fp16 else None
        if data is None:
            started = time.perf_counter()
            data = export_onnx(model.float().cpu(), settings=OnnxExportSettings(fp16=fp16))
            results.setdefault("export_seconds", {})["fp16" if fp16 else "fp32"] = (
                time.perf_counter() - started
            )
        session = OnnxRuntimeModel(data, device=device, max_batch=args.batch)
        batch = x.to(device)
        return lambda: session(batch)

    cases.append(("torch_fp32", lambda: torch_case(torch.float32)))
    if device.type == "cuda" or cpu_has_native_bf16():
        cases.append(("torch_bf16", lambda: torch_case(torch.bfloat16)))
    cases.append(("onnxruntime_fp32", lambda: onnx_case(False)))
    if device.type == "cuda":
        cases.append(("onnxruntime_fp16", lambda: onnx_case(True)))

    reference = None
    with torch.inference_mode():
        for name, build in cases:
            seconds, logits = _timed(build(), args.repeats, args.warmup)
            reference = logits if reference is None else reference
            results[name] = {
                "seconds_per_image": seconds / args.batch,
                "max_abs_logit_diff_vs_torch_fp32": float((logits - reference).abs().max()),
            }
    speed = {k: v for k, v in results.items() if k != "export_seconds"}
    base = speed["torch_fp32"]["seconds_per_image"]
    for entry in speed.values():
        entry["speedup_vs_torch_fp32"] = base / entry["seconds_per_image"]
    print(json.dumps({
        "machine": machine(), "device": str(device), "weights": args.weights, "size": args.size,
        "batch": args.batch, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "results": results,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
