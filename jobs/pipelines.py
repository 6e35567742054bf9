"""The Ray Data pipelines of a segmentation run: images and scenes, sharing one inference stage.

images: blocks of sources to do -> read -> decode + resize (CPU tasks) -> BiRefNet (actor
        pool) -> masks / cut-outs + a manifest part per batch.
scenes: one row per chunk -> window read + tiles -> the same inference stage -> blend + stage
        -> one assembly task per scene -> a manifest part.

Every stage commits its own work (outputs, then the manifest part that records them), so what
the driver sees is only small status rows, and a run stopped at any point keeps what it wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import ray
from ray.data import ActorPoolStrategy

from connectors.layout import OutputLayout
from connectors.manifest import ManifestRow, RunRef, write_manifest_part
from connectors.storage import StorageUnavailableError

from .config import SegmentConfig
from .errors import root_cause
from .ray_startup import STAGE_OPTIONS
from .scene_stages import ChunkBlendStage, ChunkTileStage, ScenePlan, assemble_scene, chunk_rows
from .segment_stages import (
    DoneLookup,
    FinishStage,
    InferenceStage,
    PrepareStage,
    ReadStage,
    run_ref,
    status_columns,
)

__all__ = [
    "CPU_TASK_CPUS",
    "INFERENCE_ACTOR_MEMORY",
    "Runtime",
    "image_pipeline",
    "run_scenes",
]

#: CPU that each read/decode task and each commit task asks for. Ray Data reserves the minimum
#: of every operator upstream first, so on a small cluster whole-CPU tasks left none for the
#: commit tasks: they waited until nearly every input was read and decoded (measured on 2 CPUs,
#: 1M inputs listed, 10k new: the first commit came 43 s into the pipeline, inferred masks
#: piling up uncommitted). Half a CPU each, both fit beside the inference actor, so commits
#: keep pace with inference. The tasks run single-threaded (birefnet_core.runtime).
CPU_TASK_CPUS = 0.5
#: RAM reserved per inference actor (weights plus activations of a batch), bytes.
INFERENCE_ACTOR_MEMORY = 2 * 1024**3


@dataclass(frozen=True)
class Runtime:
    """What every pipeline of one run shares."""

    config: SegmentConfig
    run_id: str
    device: str
    dtype: str
    gpus: float
    done: DoneLookup | None = None
    on_skipped: Callable[[int], None] | None = None

    @property
    def staging(self) -> str:
        return OutputLayout(self.config.output).run(self.run_id).staging


def _infer(ds: ray.data.Dataset, rt: Runtime) -> ray.data.Dataset:
    """The accelerator stage, identical for images and scene tiles."""
    config = rt.config
    low, high = config.concurrency
    return ds.map_batches(
        InferenceStage,
        fn_constructor_kwargs={
            "weights": config.weights_source,
            "variant": config.variant,
            "size": config.working_size,
            "device": rt.device,
            "dtype": rt.dtype,
            "s3": config.s3,
            "sha256": config.weights_sha256,
            "batch_size": config.batch_size,
            "compile": config.compile,
            "compile_scope": config.compile_scope,
            "cuda_graphs": config.cuda_graphs,
            "tf32": config.tf32,
            "channels_last": config.channels_last,
            "cpu_threads": config.cpu_threads,
            "backend": config.backend,
            "onnx_cache": config.onnx_cache,
            "engine_cache": config.engine_cache,
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


def image_pipeline(sources: ray.data.Dataset, rt: Runtime) -> ray.data.Dataset:
    """read -> prepare (CPU tasks) -> inference (actors) -> finish (CPU tasks), lazily.

    ``sources`` are what the listing left to do, in blocks (`jobs.listing.SOURCES_PER_BLOCK`
    rows at most) that set how many inputs one read task takes on."""
    config = rt.config
    # CPU stages are tasks (callable instances): they hold a core only while a batch runs. With
    # the same options they fuse into one task per listing block: read, decode, resize.
    read = ReadStage(config.s3, rt.done, rt.on_skipped)
    ds = sources.map_batches(read, batch_size=4, num_cpus=CPU_TASK_CPUS, **STAGE_OPTIONS)
    ds = ds.map_batches(
        PrepareStage(
            config.variant,
            config.working_size,
            "cutout" in config.outputs,
            config.max_image_pixels,
            config.box_margin,
        ),
        batch_size=config.batch_size,
        num_cpus=CPU_TASK_CPUS,
        **STAGE_OPTIONS,
    )
    ds = _infer(ds, rt)
    finish = FinishStage(
        config.output,
        config.outputs,
        config.refine_foreground,
        config.s3,
        run_ref(rt.run_id, config.variant, config.working_size),
        config.box_margin,
    )
    return ds.map_batches(
        finish, batch_size=max(config.batch_size, 16), num_cpus=CPU_TASK_CPUS, **STAGE_OPTIONS
    )


def _assembled(
    plans: list[ScenePlan], results: dict[str, list[dict]], rt: Runtime, run: RunRef
) -> list[ManifestRow]:
    """One manifest row per scene; a scene whose assembly task died gets an error row."""
    config = rt.config
    assemble = ray.remote(num_cpus=1, **STAGE_OPTIONS)(assemble_scene)
    pending = [
        assemble.remote(plan, results[plan.id], config.output, rt.staging, config.s3, run) for plan in plans
    ]
    rows = []
    for ref, plan in zip(pending, plans, strict=True):
        try:
            rows.append(ray.get(ref))
        except ray.exceptions.RayError as exc:
            if isinstance(root_cause(exc), StorageUnavailableError):
                raise
            error = f"{plan.uri}: assembling the mask failed ({type(exc).__name__})"
            rows.append(ManifestRow(input=plan.ref, run=run, error=error))
    return rows


def run_scenes(plans: list[ScenePlan], rt: Runtime) -> dict[str, np.ndarray]:
    """Chunks of every scene through tiles -> the shared inference stage -> blending; then one
    assembly task per scene and one manifest row each. Returns the status rows."""
    config = rt.config
    rows = [row for plan in plans for row in chunk_rows(plan)]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 200)))
    ds = ds.map_batches(
        ChunkTileStage(config.scene_tile_size, config.tile_overlap, config.s3), batch_size=1, **STAGE_OPTIONS
    )
    ds = _infer(ds, rt)
    ds = ds.map_batches(
        ChunkBlendStage(rt.staging, config.tile_overlap, config.threshold, config.s3),
        batch_size=1,
        **STAGE_OPTIONS,
    )
    results: dict[str, list[dict]] = {plan.id: [] for plan in plans}
    for row in ds.iter_rows():
        results[row["scene_id"]].append(row)
    run = RunRef(rt.run_id, config.variant, f"tiles {config.scene_tile_size}")
    manifest = _assembled(plans, results, rt, run)
    write_manifest_part(config.output, manifest, config.s3)
    return status_columns(manifest)
