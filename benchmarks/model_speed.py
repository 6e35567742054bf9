"""Forward seconds per image for one backbone, size, dtype set and thread count; prints JSON.

Compares float32 with bfloat16 (weights converted, forced even without hardware support so the
ratio is real) in one process, for each backend asked for (the first one fills
`seconds_per_image`), and reports how well the two masks agree. Random weights are used
unless --weights is given, so agreement is measured on logits as well as on thresholded masks.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch
from machine import machine  # benchmarks/machine.py, beside this file

from birefnet_core import load_model
from birefnet_core.precision import cpu_has_native_bf16, dtype_name, parse_dtype
from birefnet_core.predictor import Predictor
from birefnet_core.size import Size

#: backend name -> Predictor settings (gpu_throughput.py measures the same ones on CUDA).
BACKENDS: dict[str, dict[str, object]] = {
    "eager": {},
    "channels_last": {"channels_last": True},
    "compile": {"compile": True},
    "compile_backbone": {"compile": True, "compile_scope": "backbone"},
    "cuda_graphs": {"cuda_graphs": True},
}


def _time_forward(
    predictor: Predictor, pixels: np.ndarray, repeats: int, warmup: int
) -> tuple[float, np.ndarray]:
    for _ in range(warmup):
        predictor.infer(pixels)
    timings = []
    for _ in range(repeats):
        if predictor.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        probs = predictor.infer(pixels)
        timings.append(time.perf_counter() - started)
    return float(np.median(timings)) / len(pixels), probs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="swin_v1_l")
    parser.add_argument("--size", type=int, default=512, help="square working size, multiple of 32")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", default="random", help="weights source (default: seeded random)")
    parser.add_argument(
        "--backends", default="eager", help=f"comma list of {', '.join(BACKENDS)} (cuda_graphs: CUDA only)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    variants = {"swin_v1_t": "lite", "swin_v1_l": "general"}
    model = load_model(args.weights, variant=variants.get(args.backbone))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (args.batch, args.size, args.size, 3), dtype=np.uint8)
    result: dict[str, object] = {
        "benchmark": "model_speed",
        "backbone": args.backbone,
        "size": args.size,
        "batch": args.batch,
        "threads": args.threads,
        "device": args.device,
        "machine": machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "torch": torch.__version__,
        "seconds_per_image": {},
    }
    result["seconds_per_image_by_backend"] = {}
    outputs = {}
    for name in args.dtypes.split(","):
        dtype = parse_dtype(name)
        for backend in args.backends.split(","):
            predictor = Predictor(
                copy.deepcopy(model),
                size=Size(args.size, args.size),
                device=args.device,
                dtype=dtype,
                strict_dtype=True,
                **BACKENDS[backend],
            )
            seconds, probs = _time_forward(predictor, pixels, args.repeats, args.warmup)
            result["seconds_per_image_by_backend"].setdefault(backend, {})[dtype_name(dtype)] = round(
                seconds, 4
            )
            if backend == args.backends.split(",")[0]:
                result["seconds_per_image"][dtype_name(dtype)] = round(seconds, 4)
                outputs[dtype_name(dtype)] = probs
    if {"float32", "bfloat16"} <= outputs.keys():
        fp32, bf16 = outputs["float32"] > 0.5, outputs["bfloat16"] > 0.5
        union = np.logical_or(fp32, bf16).sum()
        timings = result["seconds_per_image"]
        result["speedup_bf16_over_fp32"] = round(timings["float32"] / timings["bfloat16"], 3)
        result["mask_iou_fp32_vs_bf16"] = round(float(np.logical_and(fp32, bf16).sum() / max(union, 1)), 5)
        result["max_abs_prob_diff"] = round(float(np.abs(outputs["float32"] - outputs["bfloat16"]).max()), 5)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
