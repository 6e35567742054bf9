"""`python -m jobs.segment`: segment an image archive with BiRefNet on Ray.

read sources -> decode + resize (CPU tasks) -> BiRefNet (actor pool, one replica per actor)
-> masks / cut-outs + manifest parts (CPU tasks). Runs on an embedded local Ray, or joins the
cluster given by --ray-address / RAY_ADDRESS (as inside `ray job submit`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import ray
from ray.data import ActorPoolStrategy

from birefnet_core.precision import cpu_has_native_bf16
from birefnet_core.runtime import ALLOCATOR_ENV
from birefnet_core.variants import VARIANTS
from birefnet_core.weights import (
    RANDOM_WEIGHTS,
    CheckpointMismatchError,
    WeightsNotFoundError,
    resolve_variant_file,
)
from connectors.inputs import Source, item_id, list_sources
from connectors.manifest import completed_inputs, write_manifest_part
from connectors.raster import read_info
from connectors.storage import StorageAuthError, filesystem, join_uri, write_bytes_atomic

from .config import ConfigError, SegmentConfig, parse_args
from .scene_stages import (
    ChunkBlendStage,
    ChunkTileStage,
    ScenePlan,
    assemble_scene,
    chunk_rows,
    is_scene_candidate,
    plan_scene,
)
from .segment_stages import FinishStage, InferenceStage, PrepareStage, ReadStage, run_fields

__all__ = ["RunSummary", "main", "run"]

log = logging.getLogger("jobs.segment")

#: RAM reserved per inference actor (weights plus activations of a batch), bytes.
INFERENCE_ACTOR_MEMORY = 2 * 1024**3
#: Remote options of every stage: workers start with the allocator settings (see ALLOCATOR_ENV).
#: Set per stage, not in ray.init, because a job submitted with its own runtime_env ignores
#: ray.init's; Ray merges these env_vars into the job's and keeps its working_dir.
STAGE_OPTIONS = {"runtime_env": {"env_vars": ALLOCATOR_ENV}}


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    inputs: int
    skipped: int
    ok: int
    failed: int
    seconds: float
    manifest: str
    errors: list[str]

    @property
    def failure_fraction(self) -> float:
        return self.failed / max(1, self.ok + self.failed)

    @property
    def images_per_second(self) -> float:
        return (self.ok + self.failed) / max(self.seconds, 1e-9)


def _init_ray(config: SegmentConfig) -> None:
    if ray.is_initialized():
        return
    address = config.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(
            num_cpus=config.num_cpus, object_store_memory=config.object_store_memory, include_dashboard=False
        )


def _previous_successes(config: SegmentConfig) -> dict[str, str]:
    """id -> source version of inputs already segmented, so a re-run does not redo them."""
    return completed_inputs(config.output, config.s3) if config.skip_existing else {}


def _check_weights(config: SegmentConfig) -> None:
    """Fail before starting any actor when the weights cannot be found (actors would only retry)."""
    source = config.weights_source
    if source == RANDOM_WEIGHTS:
        log.warning("--weights random: masks will be meaningless; the manifest records weights='random'")
    elif source in VARIANTS:
        resolve_variant_file(VARIANTS[source])
    else:
        fs, path = filesystem(source, config.s3)
        if not fs.exists(path):
            raise WeightsNotFoundError(f"weights {source!r} do not exist")


def _device(config: SegmentConfig) -> str:
    if config.device != "auto":
        return config.device
    return "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"


@dataclass(frozen=True)
class Runtime:
    """What every pipeline of one run shares."""

    config: SegmentConfig
    run_id: str
    device: str
    dtype: str
    gpus: float


def _infer(ds: ray.data.Dataset, rt: Runtime) -> ray.data.Dataset:
    """The accelerator stage, identical for images and scene tiles."""
    config = rt.config
    low, high = config.concurrency
    return ds.map_batches(
        InferenceStage,
        fn_constructor_kwargs={
            "weights": config.weights_source,
            "variant": config.variant,
            "resolution": config.resolution,
            "device": rt.device,
            "dtype": rt.dtype,
            "s3": config.s3,
            "weights_sha256": config.weights_sha256,
            "batch_size": config.batch_size,
            "compile": config.compile,
            "channels_last": config.channels_last,
            "cpu_threads": config.cpu_threads,
        },
        batch_size=config.batch_size,
        compute=ActorPoolStrategy(min_size=low, max_size=high),
        num_gpus=rt.gpus,
        num_cpus=1,
        # A replica's own RAM; distinct resources also keep Ray Data from fusing the CPU
        # stages (decode, resize) into the accelerator actor.
        memory=INFERENCE_ACTOR_MEMORY,
        **STAGE_OPTIONS,
    )


def image_pipeline(sources: list[Source], skip: dict[str, str], rt: Runtime) -> ray.data.Dataset:
    """read -> prepare (CPU tasks) -> inference (actors) -> finish (CPU tasks), not yet executed."""
    config = rt.config
    ds = ray.data.from_items([asdict(s) for s in sources], override_num_blocks=max(1, min(len(sources), 200)))
    # CPU stages are tasks (callable instances): they hold a core only while a batch runs.
    ds = ds.map_batches(ReadStage(config.s3, skip), batch_size=4, **STAGE_OPTIONS)
    ds = ds.map_batches(
        PrepareStage(config.variant, config.resolution, "cutout" in config.outputs, config.max_image_pixels),
        batch_size=config.batch_size,
        **STAGE_OPTIONS,
    )
    ds = _infer(ds, rt)
    finish = FinishStage(
        config.output,
        config.outputs,
        config.refine_foreground,
        config.s3,
        run_fields(rt.run_id, config.variant, config.resolution),
    )
    return ds.map_batches(finish, batch_size=max(config.batch_size, 16), **STAGE_OPTIONS)


def _run_scenes(plans: list[ScenePlan], rt: Runtime) -> list[dict]:
    """Chunks of every scene through tiles -> the shared inference stage -> blending; then one
    assembly task per scene and one manifest row each."""
    config = rt.config
    staging = join_uri(config.output, f"runs/{rt.run_id}/staging")
    rows = [row for plan in plans for row in chunk_rows(plan)]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 200)))
    ds = ds.map_batches(
        ChunkTileStage(config.scene_tile_size, config.tile_overlap, config.s3), batch_size=1, **STAGE_OPTIONS
    )
    ds = _infer(ds, rt)
    ds = ds.map_batches(
        ChunkBlendStage(staging, config.tile_overlap, config.threshold, config.s3),
        batch_size=1,
        **STAGE_OPTIONS,
    )
    results: dict[str, list[dict]] = {plan.id: [] for plan in plans}
    for row in ds.iter_rows():
        results[row["scene_id"]].append(row)
    assemble = ray.remote(num_cpus=1, **STAGE_OPTIONS)(assemble_scene)
    manifest = ray.get(
        [assemble.remote(plan, results[plan.id], config.output, staging, config.s3) for plan in plans]
    )
    run = run_fields(rt.run_id, config.variant, None) | {"resolution": f"tiles {config.scene_tile_size}"}
    stamped = [{**row, **run, "processed_at": datetime.now(UTC)} for row in manifest]
    write_manifest_part(config.output, stamped, config.s3)
    return stamped


def _split_scenes(sources: list[Source], config: SegmentConfig) -> tuple[list[Source], list[ScenePlan]]:
    """GeoTIFFs (and plain TIFFs above `scene_min_pixels`) take the scene path; the rest are images."""
    images, plans = [], []
    for source in sources:
        if is_scene_candidate(source):
            try:
                info = read_info(source.uri, config.s3)
            except Exception as exc:
                log.warning("%s: not readable as a raster (%s); treating it as an image", source.uri, exc)
            else:
                if info.is_georeferenced or info.width * info.height > config.scene_min_pixels:
                    plans.append(
                        plan_scene(source, info, config.bands, config.band_percentiles,
                                   config.chunk_size, config.scene_halo, config.s3)
                    )  # fmt: skip
                    continue
        images.append(source)
    return images, plans


def run(config: SegmentConfig) -> RunSummary:
    """Run the whole job and return its summary (the manifest holds the per-input detail)."""
    started = time.perf_counter()
    _check_weights(config)
    _init_ray(config)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    device = _device(config)
    dtype = config.resolved_dtype(device, cpu_has_native_bf16())
    gpus = config.num_gpus_per_actor if config.num_gpus_per_actor is not None else float(device == "cuda")
    rt = Runtime(config, run_id, device, dtype, gpus)
    write_bytes_atomic(
        join_uri(config.output, f"runs/{run_id}/config.json"),
        json.dumps({**config.model_dump(mode="json"), "device": device, "dtype": dtype}, indent=2).encode(),
        config.s3,
    )

    sources = list_sources(config.input, config.s3)
    done = _previous_successes(config)
    todo = [s for s in sources if s.kind == "tar" or done.get(item_id(s.uri)) != s.version]
    images, scenes = _split_scenes(todo, config)
    log.info(
        "run %s: %d sources (%d done before), %d image sources, %d scenes, device %s, dtype %s",
        run_id, len(sources), len(sources) - len(todo), len(images), len(scenes), device, dtype,
    )  # fmt: skip

    rows = (list(image_pipeline(images, done, rt).iter_rows()) if images else []) + (
        _run_scenes(scenes, rt) if scenes else []
    )
    errors = [row["error"] for row in rows if row["status"] != "ok"]
    return RunSummary(
        run_id=run_id,
        inputs=len(rows),
        skipped=len(sources) - len(todo),
        ok=len(rows) - len(errors),
        failed=len(errors),
        seconds=time.perf_counter() - started,
        manifest=join_uri(config.output, "manifest"),
        errors=errors,
    )


def _report(summary: RunSummary, config: SegmentConfig) -> None:
    print(
        f"\nrun {summary.run_id}: {summary.ok} ok, {summary.failed} failed, {summary.skipped} skipped (done before)"
    )
    print(f"{summary.images_per_second:.2f} images/s over {summary.seconds:.1f} s")
    for error in summary.errors[:20]:
        print(f"  error: {error}")
    if len(summary.errors) > 20:
        print(f"  ... and {len(summary.errors) - 20} more (see the manifest)")
    print(f"manifest: {summary.manifest}")
    if summary.failure_fraction > config.max_failure_fraction:
        print(
            f"FAILED: {summary.failure_fraction:.1%} of inputs failed (allowed {config.max_failure_fraction:.1%})"
        )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = parse_args(argv)
        summary = run(config)
    except (
        ConfigError,
        StorageAuthError,
        FileNotFoundError,
        WeightsNotFoundError,
        CheckpointMismatchError,
    ) as exc:
        # Problems with the job as a whole (not with single inputs): one clear line, no traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _report(summary, config)
    return 0 if summary.failure_fraction <= config.max_failure_fraction else 1


if __name__ == "__main__":
    raise SystemExit(main())
