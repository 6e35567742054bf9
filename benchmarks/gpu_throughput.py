"""CUDA throughput of BiRefNet: per-image seconds by dtype and backend, a batch-size sweep, and the
job's end-to-end images/s against the model alone; prints JSON (with the GPU's name).

Run from the repository root: `.venv/bin/python benchmarks/gpu_throughput.py`. Without CUDA it
prints `{"benchmark": "gpu_throughput", "skipped": ...}` and exits 0. Random weights: speed only.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from model_speed import BACKENDS  # benchmarks/model_speed.py, beside this file

from birefnet_core import load_model
from birefnet_core.precision import dtype_name, parse_dtype
from birefnet_core.predictor import Predictor
from birefnet_core.size import Size


def seconds_per_image(predictor: Predictor, size: int, batch: int, repeats: int) -> float:
    """Median over `repeats` of one batch's wall time (upload to download), per image."""
    pixels = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    for _ in range(2):  # compilation, autotuning, CUDA graph capture
        predictor.infer_batches(pixels, batch)
    timings = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        started = time.perf_counter()
        predictor.infer_batches(pixels, batch)
        timings.append(time.perf_counter() - started)
    return float(np.median(timings)) / batch


def measure(model, size: int, batch: int, dtype: str, backend: str, repeats: int) -> float | str:
    try:
        predictor = Predictor(
            copy.deepcopy(model), size=Size(size, size), device="cuda", dtype=dtype, **BACKENDS[backend]
        )
        return round(seconds_per_image(predictor, size, batch, repeats), 5)
    except Exception as exc:  # one failing backend must not hide the others' figures
        return f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    finally:
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="lite,general")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--dtypes", default="float32,float16,bfloat16")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--batch", type=int, default=4, help="batch of the dtype/backend table")
    parser.add_argument("--sweep", default="1,2,4,8,16", help="batch sizes swept (float16, eager)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--e2e-images", type=int, default=64, help="0 skips the end-to-end job")
    args = parser.parse_args(argv)
    result: dict[str, object] = {"benchmark": "gpu_throughput"}
    if not torch.cuda.is_available():
        result["skipped"] = "no CUDA device (torch.cuda.is_available() is False)"
        print(json.dumps(result))
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    result.update(
        gpu=torch.cuda.get_device_name(0),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        size=args.size,
        batch=args.batch,
    )
    for variant in args.variants.split(","):
        model = load_model("random", variant=variant)
        table = {
            dtype_name(parse_dtype(dtype)): {
                backend: measure(model, args.size, args.batch, dtype, backend, args.repeats)
                for backend in args.backends.split(",")
            }
            for dtype in args.dtypes.split(",")
        }
        sweep = {
            int(batch): measure(model, args.size, int(batch), "float16", "eager", args.repeats)
            for batch in args.sweep.split(",")
        }
        best = min(v for row in table.values() for v in row.values() if isinstance(v, float))
        result[variant] = {
            "seconds_per_image": table,
            "float16_eager_batch_sweep_seconds_per_image": sweep,
            "best_images_per_second": round(1.0 / best, 2),
        }
        del model
    if args.e2e_images:
        from pipeline import make_jpegs, throughput  # benchmarks/pipeline.py, beside this file

        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            make_jpegs(root / "in", args.e2e_images, 2048, 1536)
            result["end_to_end_lite_float16"] = throughput(
                root / "in",
                root / "out",
                args.size,
                args.batch,
                variant="lite",
                device="cuda",
                dtype="float16",
            )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
