"""The segmentation job's driver: what `birefnet segment` / `python -m jobs.segment` runs.

Lists the inputs on the cluster, skips what earlier runs finished, plans the scenes (reusing the
chunks an interrupted run staged) and runs images and scenes in one stream (`jobs.segment.pipelines`).
Runs on an embedded local Ray, or joins the cluster given by --ray-address / RAY_ADDRESS (as
inside `ray job submit`). Every run ends by writing
`runs/<run_id>/summary.json`; the exit code says how it ended (`jobs.common.errors`).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import ray

from birefnet_core.precision import cpu_has_native_bf16
from birefnet_core.variants import VARIANTS
from birefnet_core.weights import RANDOM_WEIGHTS, WeightsNotFoundError, resolve_variant_file
from connectors.layout import OutputLayout, RunFiles
from connectors.listing import Source, sources_table
from connectors.manifest import DoneIndex, ManifestRow, compact_manifest, write_manifest_part
from connectors.staging import sweep_staging
from connectors.storage import (
    S3Options,
    exists,
    file_info,
    remove_interrupted_writes,
    version_tag,
    write_bytes_atomic,
)

from ..common.cli import Command
from ..common.errors import EXIT_FAILURES, EXIT_JOB_ERROR, EXIT_OK, one_line, traceback_text
from ..common.ray_startup import STAGE_OPTIONS, Needs, choose_device, ensure_resources, start_ray
from .config import SegmentConfig
from .listing import list_inputs
from .pipelines import Runtime, replica_spec, run_pipeline, scene_run_ref
from .rows import run_ref, status_columns
from .scene_commits import SceneCommits
from .scene_context import stage_contexts
from .scene_planning import ScenePlan, SceneSettings, plan_candidate, scene_error_row

__all__ = ["COMMAND", "RunSummary", "main", "run"]

log = logging.getLogger("jobs.segment")

#: Error messages a summary keeps (the manifest has all of them).
KEPT_ERRORS = 100


@dataclass
class RunSummary:
    """Counts and timings of one run, as written to runs/<run_id>/summary.json."""

    run_id: str
    listed: int = 0
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    manifest: str = ""
    errors: list[str] = field(default_factory=list)
    exit_code: int | None = None
    job_error: str | None = None
    driver_peak_rss_mb: float = 0.0
    scene_chunks_reused: int = 0
    scene_chunks_inferred: int = 0

    @property
    def inputs(self) -> int:
        """Inputs processed by this run (ok or failed)."""
        return self.ok + self.failed

    @property
    def failure_fraction(self) -> float:
        return self.failed / max(1, self.inputs)

    @property
    def images_per_second(self) -> float:
        return self.inputs / max(self.seconds, 1e-9)

    def count(self, statuses: Mapping[str, np.ndarray]) -> None:
        """Add a batch of status rows (id, status, error) from a pipeline."""
        failed = statuses["status"] != "ok"
        self.failed += int(failed.sum())
        self.ok += len(failed) - int(failed.sum())
        room = KEPT_ERRORS - len(self.errors)
        if room > 0:
            self.errors.extend(str(e) for e in statuses["error"][failed][:room])


@ray.remote(num_cpus=0)
class _Counter:
    """Tar members the read stage skipped as done (they are only known once a shard is read)."""

    def __init__(self) -> None:
        self.total = 0

    def add(self, n: int) -> None:
        self.total += n

    def value(self) -> int:
        return self.total


class _CountSkipped:
    """Picklable callable the stages call with how many inputs they skipped."""

    def __init__(self, counter: ray.actor.ActorHandle) -> None:
        self.counter = counter

    def __call__(self, n: int) -> None:
        self.counter.add.remote(n)


class _SharedIndex:
    """The done-index from the object store: each node fetches it once, tasks map it zero-copy,
    and what is pickled into a task is only this reference."""

    def __init__(self, ref: ray.ObjectRef) -> None:
        self.ref = ref

    def __call__(self) -> DoneIndex:
        return ray.get(self.ref)


def _done_index(output: str, s3: S3Options, skip_existing: bool) -> DoneIndex:
    """What earlier runs finished (nothing when re-doing everything)."""
    return DoneIndex.load(output, s3) if skip_existing else DoneIndex.empty()


def _check_weights(config: SegmentConfig) -> str:
    """Fail before starting any actor when the weights cannot be found (actors would only retry).
    Returns the weights' version (size and ETag or mtime), which keys staged scene chunks."""
    source = config.weights_source
    if source == RANDOM_WEIGHTS:
        log.warning("--weights random: masks will be meaningless; the manifest says weights_sha256='random'")
        return RANDOM_WEIGHTS
    path = resolve_variant_file(VARIANTS[source]) if source in VARIANTS else source
    if path is source and not exists(source, config.s3):
        raise WeightsNotFoundError(f"weights {source!r} do not exist")
    info = file_info(path, config.s3)
    return f"{info.get('size')}:{version_tag(info)}"


def pipeline_needs(config: SegmentConfig, gpus_per_actor: float) -> Needs:
    """The smallest actor pool plus one CPU for the read, decode and write tasks."""
    actors = config.concurrency[0]
    return Needs(
        cpus=actors + 1,
        gpus=actors * gpus_per_actor,
        what=f"{actors} inference actor(s) with 1 CPU each plus 1 CPU for reading, decoding and writing",
    )


def _route_scenes(
    candidates: list[Source], config: SegmentConfig, settings: SceneSettings, run_id: str
) -> tuple[list[Source], list[ScenePlan], list[ManifestRow]]:
    """(candidates that are plain images, scene plans, error rows of scenes that cannot be
    planned); planned in parallel tasks, since each reads the scene's metadata."""
    plan = ray.remote(num_cpus=1, **STAGE_OPTIONS)(plan_candidate)
    refs = [plan.remote(source, settings, config.s3) for source in candidates]
    images, plans, failed = [], [], []
    for source, result in zip(candidates, ray.get(refs), strict=True):
        if result is None:
            images.append(source)
        elif source.box:
            message = f"{source.uri}: a box guides images, not tiled scenes; list the scene without one"
            failed.append(scene_error_row(source, message, run_ref(run_id, config.variant, None)))
        elif isinstance(result, str):
            failed.append(scene_error_row(source, result, run_ref(run_id, config.variant, None)))
        else:
            plans.append(result)
    return images, plans, failed


def _write_json(uri: str, data: dict, config: SegmentConfig) -> None:
    write_bytes_atomic(uri, json.dumps(data, indent=2, default=str).encode(), config.s3)


def _with_contexts(
    plans: list[ScenePlan], config: SegmentConfig, rt: Runtime
) -> tuple[list[ScenePlan], list[ManifestRow]]:
    """Stage the whole-scene context of the scenes to do (--scene-context); scenes whose view
    cannot be read become error rows."""
    if not config.scene_context or not plans:
        return plans, []
    errors = stage_contexts(plans, config.scene_context, replica_spec(rt), rt.gpus, config.s3)
    failed = [
        ManifestRow(input=p.ref, run=scene_run_ref(rt), error=errors[p.id]) for p in plans if p.id in errors
    ]
    return [p for p in plans if p.id not in errors], failed


def _execute(config: SegmentConfig, files: RunFiles, summary: RunSummary, weights_version: str) -> None:
    """Everything between start-up and the summary: listing, skipping, the pipeline, compaction."""
    started = time.time()
    embedded = not (config.ray_address or os.environ.get("RAY_ADDRESS"))
    device = choose_device(config.device, embedded, config.num_gpus_per_actor, config.gpu_wait_seconds)
    dtype = config.resolved_dtype(device, cpu_has_native_bf16())
    gpus = config.num_gpus_per_actor if config.num_gpus_per_actor is not None else float(device == "cuda")
    ensure_resources(pipeline_needs(config, gpus), embedded=embedded)
    _write_json(files.config, {**config.model_dump(mode="json"), "device": device, "dtype": dtype}, config)
    # Temp files of writers killed in an earlier run; this run writes nothing until the sweep is done.
    sweep = ray.remote(num_cpus=1, **STAGE_OPTIONS)(remove_interrupted_writes).remote(config.output, started)
    # Staged scene chunks no run with these settings can reuse; swept before any scene is planned.
    settings = SceneSettings.of(config, dtype, weights_version)
    max_age = started - config.scene_staging_max_age_hours * 3600
    stale = ray.remote(num_cpus=1, **STAGE_OPTIONS)(sweep_staging).remote(  # type: ignore[call-arg]  # stubs miss defaults
        settings.staging_root, settings.key, max_age, config.s3
    )

    # Built by a task, so it goes straight into the object store: the driver never holds it.
    load = ray.remote(num_cpus=1, **STAGE_OPTIONS)(_done_index)
    done = _SharedIndex(load.remote(config.output, config.s3, config.skip_existing))
    counter = _Counter.remote()  # type: ignore[attr-defined]  # @ray.remote makes it an actor class
    rt = Runtime(config, summary.run_id, device, dtype, gpus, done, _CountSkipped(counter))
    listing = list_inputs(config.input, config.s3, done, config.scene_min_bytes)
    summary.listed = listing.listed
    if removed := ray.get(stale):
        log.info("removed %d stale staging folders under %s", removed, settings.staging_root)
    as_images, plans, unplanned = _route_scenes(listing.scene_candidates, config, settings, summary.run_id)
    log.info(
        "run %s: %d inputs listed, %d done before, %d scenes to do, device %s, dtype %s",
        summary.run_id, listing.listed, listing.skipped, len(plans), device, dtype,
    )  # fmt: skip

    if removed := ray.get(sweep):  # before this run writes anything
        log.info("removed %d temp files that an interrupted run left in %s", removed, config.output)
    plans, failed = _with_contexts(plans, config, rt)
    if unplanned or failed:
        write_manifest_part(config.output, unplanned + failed, config.s3)
        summary.count(status_columns(unplanned + failed))
    sources = listing.dataset
    if as_images:
        sources = sources.union(ray.data.from_arrow(sources_table(as_images)))
    commits = SceneCommits(plans, config.output, config.s3, scene_run_ref(rt))
    for batch in run_pipeline(sources, commits, rt):
        summary.count(batch)
    summary.scene_chunks_reused, summary.scene_chunks_inferred = commits.reused, commits.inferred
    summary.skipped = listing.skipped + ray.get(counter.value.remote())
    if config.compact_manifest:
        # On a worker: merging the manifest holds it whole, which the driver never does.
        compact = ray.remote(num_cpus=1, **STAGE_OPTIONS)(compact_manifest)
        result = ray.get(compact.remote(config.output, config.s3))  # type: ignore[call-arg]  # stubs miss defaults
        log.info("manifest compacted: %d rows in %d files", result.rows, len(result.files))


def run(config: SegmentConfig) -> RunSummary:
    """Run the whole job and return its summary (the manifest holds the per-input detail).

    Job-level problems raise (JobError, storage and weights errors, or whatever crashed), after
    the summary recording them has been written when the output is writable.
    """
    started = time.perf_counter()
    weights_version = _check_weights(config)
    start_ray(config.ray_address, config.num_cpus, config.object_store_memory)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    layout = OutputLayout(config.output)
    files = layout.run(run_id)
    summary = RunSummary(run_id=run_id, manifest=layout.manifest)
    try:
        _execute(config, files, summary, weights_version)
    except BaseException as exc:
        summary.exit_code, summary.job_error = EXIT_JOB_ERROR, one_line(exc)
        trace = traceback_text(exc)
        log.debug("run %s failed:\n%s", run_id, trace)
        _finish(summary, files, config, started, traceback=trace)
        raise
    too_many = summary.failure_fraction > config.max_failure_fraction
    summary.exit_code = EXIT_FAILURES if too_many else EXIT_OK
    _finish(summary, files, config, started)
    return summary


def _finish(
    summary: RunSummary, files: RunFiles, config: SegmentConfig, started: float, **extra: str
) -> None:
    summary.seconds = time.perf_counter() - started
    summary.driver_peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        _write_json(files.summary, {**asdict(summary), "inputs": summary.inputs, **extra}, config)
    except Exception as exc:  # the store may be what failed; the exit code still tells
        log.warning("could not write %s: %s", files.summary, one_line(exc))


def _report(summary: RunSummary, config: SegmentConfig) -> None:
    print(
        f"\nrun {summary.run_id}: {summary.ok} ok, {summary.failed} failed, {summary.skipped} skipped (done before)"
    )
    print(f"{summary.images_per_second:.2f} images/s over {summary.seconds:.1f} s")
    for error in summary.errors[:20]:
        print(f"  error: {error}")
    if summary.failed > 20:
        print(f"  ... and {summary.failed - 20} more (see the manifest)")
    print(f"manifest: {summary.manifest}")
    if summary.exit_code == EXIT_FAILURES:
        print(
            f"FAILED: {summary.failure_fraction:.1%} of inputs failed (allowed {config.max_failure_fraction:.1%})"
        )


def segment(config: SegmentConfig) -> int:
    """Exit codes: 0 ok, 1 more inputs failed than allowed, 2 the job itself failed (one line)."""
    summary = run(config)
    _report(summary, config)
    return summary.exit_code if summary.exit_code is not None else EXIT_OK


COMMAND = Command(
    name="segment",
    config=SegmentConfig,
    run=segment,
)

main = COMMAND.main
