"""Scene path throughput and memory: a generated W x W GeoTIFF through chunking, tiling, a
stand-in model that costs nothing, blending and COG assembly; prints JSON.

Every stage runs in one process, one chunk at a time, exactly as a Ray worker runs them, so
the process's peak RSS bounds what any worker of the real job needs. Each scene size runs in a
fresh subprocess so the peaks are comparable (run 10000 and 20000 to show independence).
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

from connectors.listing import Source
from connectors.manifest import RunRef
from connectors.raster import read_info
from connectors.storage import S3Options
from jobs.batches import column_batch, rows_of
from jobs.scene_stages import ChunkBlendStage, ChunkTileStage, assemble_scene, chunk_rows, plan_scene


def stand_in(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inference stand-in: the tiles' first channel as 'probabilities' (no model cost)."""
    rows = list(rows_of(batch))
    for row in rows:
        row.update(
            probs=row.pop("pixels")[..., 0].copy(),
            infer_seconds=0.0,
            weights_sha256="-",
            weights_source="-",
            dtype="-",
        )
    return column_batch(rows, list(rows[0]))


def process(path: Path, work: Path, tile: int, overlap: int, chunk: int) -> dict[str, float]:
    s3 = S3Options()
    started = time.perf_counter()
    source = Source(
        uri=str(path), relative_path=path.name, size=path.stat().st_size, version="bench", kind="file"
    )
    plan = plan_scene(source, read_info(str(path)), None, (2.0, 98.0), chunk, overlap, s3)
    tiler = ChunkTileStage(tile, overlap, s3)
    blender = ChunkBlendStage(str(work / "staging"), overlap, None, s3)
    results = []
    for row in chunk_rows(plan):
        results += list(rows_of(blender(stand_in(tiler(column_batch([row], list(row)))))))
    blended = time.perf_counter()
    peak_before_assembly = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    manifest = assemble_scene(
        plan, results, str(work / "out"), str(work / "staging"), s3, RunRef("bench", "stand-in", "tiles")
    ).as_dict()
    done = time.perf_counter()
    megapixels = plan.info.width * plan.info.height / 1e6
    return {
        "status": manifest["status"],
        "megapixels": megapixels,
        "chunks": len(plan.chunks),
        "tiles": manifest["tile_count"],
        "seconds": round(done - started, 2),
        "assemble_seconds": round(done - blended, 2),
        "megapixels_per_second": round(megapixels / (done - started), 2),
        "peak_rss_mb_chunk_stages": round(peak_before_assembly, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def one_size(size: int, tile: int, overlap: int, chunk: int) -> dict[str, object]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.geotiff_scenes import make_geotiff

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        path = make_geotiff(work / "scene.tif", size, size, 3, dtype="uint16")
        generated = time.perf_counter() - started
        result = process(path, work, tile, overlap, chunk)
    return {"size": size, "generate_seconds": round(generated, 1), **result}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,20000", help="scene sides to run, each in a fresh process")
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one_size(args.one, args.tile, args.overlap, args.chunk)))
        return
    runs = []
    for size in (int(s) for s in args.sizes.split(",")):
        cmd = [sys.executable, __file__, "--one", str(size), "--tile", str(args.tile),
               "--overlap", str(args.overlap), "--chunk", str(args.chunk)]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    print(
        json.dumps(
            {
                "benchmark": "tiling",
                "tile": args.tile,
                "overlap": args.overlap,
                "chunk": args.chunk,
                "runs": runs,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
