"""Non-model CPU cost per image of the segmentation pipeline, and end-to-end vs model-only throughput.

Part 1 runs the job's own stage functions in this process over N generated 2048x1536 JPEGs with a
stand-in model that costs nothing, and reports CPU seconds per image for each step (read, decode +
resize, normalise, post-process + quality, PNG encode + atomic write). Part 2 runs the real Ray
job on the same images with a real (random-weight) model and compares its throughput with the
model alone (`Predictor.infer` on ready batches) on the same machine. Runs with the environment
the job gives its workers (`ALLOCATOR_ENV`). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from birefnet_core.preprocessing import normalize_batch
from birefnet_core.runtime import ALLOCATOR_ENV, set_cpu_threads
from birefnet_core.size import Size
from birefnet_core.variants import IMAGENET_MEAN, IMAGENET_STD
from connectors.listing import list_sources
from connectors.storage import S3Options, write_bytes_atomic
from connectors.synthetic import encode_image, object_scene
from jobs.common.cli import build_config
from jobs.segment import run
from jobs.segment.config import SegmentConfig
from jobs.segment.image_stages import FinishStage, PrepareStage, ReadStage
from jobs.segment.rows import MODEL_KEYS, column_batch, rows_of, run_ref


def _cpu() -> float:
    return time.process_time()


def make_jpegs(folder: Path, count: int, width: int, height: int) -> None:
    scene = object_scene(width, height, seed=0)
    for i in range(count):
        path = folder / f"img_{i:04d}.jpg"
        if not path.exists():
            write_bytes_atomic(str(path), encode_image(scene.rotate(i % 4 * 90, expand=False)))


def stage_costs(folder: Path, output: Path, resolution: int) -> dict[str, float]:
    """CPU seconds per image of every non-model step, with a stand-in model in place of BiRefNet."""
    s3 = S3Options()
    sources = [s.__dict__ for s in list_sources(str(folder), s3)]
    count = len(sources)
    timings: dict[str, float] = {}

    started = _cpu()
    records = ReadStage(s3)(column_batch(sources, list(sources[0])))
    timings["read"] = _cpu() - started

    prepare = PrepareStage("lite", Size(resolution, resolution), keep_bytes=False, max_pixels=10**9)
    started = _cpu()
    prepared = [prepare({k: v[i : i + 1] for k, v in records.items()}) for i in range(count)]
    timings["decode_resize"] = _cpu() - started

    started = _cpu()
    for batch in prepared:
        normalize_batch(torch.from_numpy(batch["pixels"]), IMAGENET_MEAN, IMAGENET_STD)
    timings["normalise"] = _cpu() - started

    yy, xx = np.mgrid[:resolution, :resolution]
    disc = ((yy - resolution / 2) ** 2 + (xx - resolution / 2) ** 2) < (resolution / 3) ** 2
    stand_in = disc.astype(np.uint8) * 255  # what the accelerator hands back: quantised probabilities
    rows = [row for batch in prepared for row in rows_of(batch)]
    model_columns = {key: "stand-in" for key in MODEL_KEYS}  # whatever columns inference adds
    for row in rows:
        row.update(probs=stand_in, infer_seconds=0.0, **model_columns)
    finish = FinishStage(
        str(output), ["mask"], False, s3, run_ref("bench", "lite", Size(resolution, resolution))
    )
    finish_batch = 16  # the job's finishing batch size
    batches = [column_batch(rows[i : i + finish_batch], [*rows[0]]) for i in range(0, count, finish_batch)]
    started = _cpu()
    for batch in batches:
        finish(batch)
    timings["postprocess_encode_write"] = _cpu() - started
    per_image = {k: round(v / count, 4) for k, v in timings.items()}
    per_image["total"] = round(sum(timings.values()) / count, 4)
    return per_image


def throughput(
    folder: Path,
    output: Path,
    resolution: int,
    batch: int,
    variant: str = "lite",
    device: str = "cpu",
    dtype: str = "float32",
) -> dict[str, float]:
    """End-to-end Ray job images/s against the model alone (`Predictor.infer_batches` on ready
    pixels, same variant, device, dtype and batch size) on the same machine."""
    config = build_config(
        SegmentConfig,
        {
            "input": str(folder),
            "output": str(output),
            "variant": variant,
            "weights": "random",
            "resolution": (resolution, resolution),
            "batch_size": batch,
            "device": device,
            "dtype": dtype,
            "skip_existing": False,
            "object_store_memory": 300 * 1024 * 1024,
        },
    )
    summary = run(config)
    from birefnet_core import load_model
    from birefnet_core.predictor import Predictor

    set_cpu_threads(os.cpu_count() or 1)  # the stage measurements above capped this process at one
    predictor = Predictor(
        load_model("random", variant=variant), size=Size(resolution, resolution), device=device, dtype=dtype
    )
    pixels = np.random.default_rng(0).integers(
        0, 256, (max(summary.ok, batch), resolution, resolution, 3), dtype=np.uint8
    )
    predictor.infer_batches(pixels[:batch], batch)
    started = time.perf_counter()
    predictor.infer_batches(pixels, batch)
    model_only = len(pixels) / (time.perf_counter() - started)
    return {
        "end_to_end_images_per_second": round(summary.images_per_second, 3),
        "model_only_images_per_second": round(model_only, 3),
        "end_to_end_over_model_only": round(summary.images_per_second / model_only, 3),
        "job_seconds": round(summary.seconds, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--height", type=int, default=1536)
    parser.add_argument("--resolution", type=int, default=1024, help="working size for the stand-in part")
    parser.add_argument("--e2e-images", type=int, default=8)
    parser.add_argument(
        "--e2e-resolution", type=int, default=256, help="working size for the real-model part"
    )
    parser.add_argument("--skip-e2e", action="store_true")
    args = parser.parse_args(argv)
    os.environ.update(ALLOCATOR_ENV)  # as the job's workers start; works before torch's first allocation
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_jpegs(root / "in", args.images, args.width, args.height)
        result: dict[str, object] = {
            "benchmark": "pipeline",
            "images": args.images,
            "image_size": f"{args.width}x{args.height}",
            "working_size": args.resolution,
            "torch_threads": torch.get_num_threads(),
            "non_model_cpu_seconds_per_image": stage_costs(root / "in", root / "out", args.resolution),
        }
        if not args.skip_e2e:
            make_jpegs(root / "e2e", args.e2e_images, args.width, args.height)
            result["throughput"] = throughput(root / "e2e", root / "e2e_out", args.e2e_resolution, batch=4)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
