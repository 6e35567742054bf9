"""Scene path throughput, assembly share and memory, and what whole-scene context buys; prints JSON.

Speed: a generated W x W uint16 GeoTIFF goes through chunking, tiling, a stand-in model that
costs nothing, blending, chunk staging and the scene's commit (COG assembly and its manifest
row). Every chunk runs in one process, one after another, exactly as a Ray worker runs them,
so the process's peak RSS bounds what any worker of the real job needs; each size runs in a
fresh subprocess so the peaks are comparable. The assembly share is the commit's part of the
scene's wall time.

Context: generated photo-like scenes whose objects span many tiles, segmented by the shipped
demo model tile by tile with and without `TilingOptions(context_size=...)`; S-measure and MAE
against the ground truth.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import machine  # benchmarks/machine.py, beside this file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.geotiff_scenes import make_geotiff
from tests.support.scene_harness import plan_of, run_scene, settings, stand_in_inference


def first_channel(tiles: np.ndarray) -> np.ndarray:
    """Inference stand-in: the tiles' first channel as probability levels (no model cost)."""
    return np.ascontiguousarray(tiles[..., 0])


def one_size(size: int, tile: int, overlap: int, chunk: int, repeats: int) -> dict[str, object]:
    """The scene generated once, then run ``repeats`` times (a fresh output each time);
    the figures are those of the run with the median wall time, ``all_seconds`` lists every run."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        path = make_geotiff(work / "scene.tif", size, size, 3, dtype="uint16")
        generated = time.perf_counter() - started
        plan = plan_of(path, settings(str(work / "staging"), chunk, overlap, tile=tile))
        # Each commit removes the scene's staging, so every repeat segments every chunk again.
        scenes = [
            run_scene(plan, stand_in_inference(first_channel), work / f"out{i}", tile, overlap)
            for i in range(repeats)
        ]
    walls = [scene.chunk_seconds + scene.commit_seconds for scene in scenes]
    scene = scenes[walls.index(sorted(walls)[len(walls) // 2])]
    wall = scene.chunk_seconds + scene.commit_seconds
    megapixels = size * size / 1e6
    return {
        "size": size,
        "status": scene.row["status"],
        "megapixels": megapixels,
        "chunks": len(plan.chunks),
        "tiles": scene.row["tile_count"],
        "generate_seconds": round(generated, 1),
        "seconds": round(wall, 2),
        "all_seconds": [round(w, 2) for w in walls],
        "chunk_seconds": round(scene.chunk_seconds, 2),
        "assembly_seconds": round(scene.commit_seconds, 2),
        "assembly_share": round(scene.commit_seconds / wall, 3),
        "seconds_per_megapixel": round(wall / megapixels, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _mean(runs: list[dict[str, float | None]], key: str) -> float:
    return round(float(np.mean([float(run[key] or 0.0) for run in runs])), 4)


def context_quality(scenes: int, size: int, overlap: int) -> dict[str, object]:
    """Mean S-measure and MAE of the demo model's tiled masks, without and with context."""
    import torch

    from birefnet_core import load_model
    from birefnet_core.metrics import image_metrics
    from birefnet_core.tiling import TilingOptions, predict_tiled
    from birefnet_core.variants import get_variant
    from connectors.synthetic import training_scene

    model = load_model("demo").eval()
    tile = get_variant("demo").size.height

    def predict(batch: torch.Tensor) -> torch.Tensor:
        return model(batch).sigmoid()

    scores: dict[str, list[dict[str, float | None]]] = {"without": [], "with": []}
    for seed in range(scenes):
        image, truth = training_scene(size, size, seed=10_000 + seed)
        pixels = np.asarray(image)
        for name, context in (("without", None), ("with", tile)):
            options = TilingOptions(tile, overlap, batch_size=8, context_size=context)
            probabilities = predict_tiled(pixels, predict, options).probabilities
            scores[name].append(image_metrics((probabilities * 255 + 0.5).astype(np.uint8), truth, hce=False))
    return {
        "scene_size": size,
        "tile": tile,
        "overlap": overlap,
        "scenes": scenes,
        **{
            f"{name}_context": {key: _mean(runs, key) for key in ("S", "MAE")}
            for name, runs in scores.items()
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,20000", help="scene sides to run, each in a fresh process")
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument(
        "--context-scenes", type=int, default=8, help="scenes for the context comparison; 0 skips"
    )
    parser.add_argument(
        "--context-size", type=int, default=1024, help="side of the context comparison's scenes"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs per size (median reported); this VM varies ~10%% run to run",
    )
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one_size(args.one, args.tile, args.overlap, args.chunk, args.repeats)))
        return
    runs = []
    for size in (int(s) for s in args.sizes.split(",") if s):
        cmd = [sys.executable, __file__, "--one", str(size), "--tile", str(args.tile),
               "--overlap", str(args.overlap), "--chunk", str(args.chunk), "--repeats", str(args.repeats)]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    result: dict[str, object] = {
        "benchmark": "tiling",
        "machine": machine(),
        "tile": args.tile,
        "overlap": args.overlap,
        "chunk": args.chunk,
        "repeats": args.repeats,
        "runs": runs,
    }
    if args.context_scenes:
        result["context"] = context_quality(args.context_scenes, args.context_size, overlap=64)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
