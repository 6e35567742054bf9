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

import ray
from ray.data import ActorPoolStrategy

from birefnet_core.precision import cpu_has_native_bf16
from birefnet_core.variants import VARIANTS
from birefnet_core.weights import (
    RANDOM_WEIGHTS,
    CheckpointMismatchError,
    WeightsNotFoundError,
    resolve_variant_file,
)
from connectors.inputs import list_sources
from connectors.manifest import completed_inputs
from connectors.storage import StorageAuthError, filesystem, join_uri, write_bytes_atomic

from .config import ConfigError, SegmentConfig, parse_args
from .segment_stages import FinishStage, InferenceStage, PrepareStage, ReadStage, run_fields

__all__ = ["RunSummary", "main", "run"]

log = logging.getLogger("jobs.segment")


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


def _cpu_pool() -> ActorPoolStrategy:
    """CPU stages scale between one worker and eight as Ray Data's backpressure asks."""
    return ActorPoolStrategy(min_size=1, max_size=8)


def _device(config: SegmentConfig) -> str:
    if config.device != "auto":
        return config.device
    return "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"


def run(config: SegmentConfig) -> RunSummary:
    """Run the whole job and return its summary (the manifest holds the per-input detail)."""
    started = time.perf_counter()
    _check_weights(config)
    _init_ray(config)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    device = _device(config)
    dtype = config.resolved_dtype(device, cpu_has_native_bf16())
    gpus = (
        config.num_gpus_per_actor
        if config.num_gpus_per_actor is not None
        else (1.0 if device == "cuda" else 0.0)
    )
    write_bytes_atomic(
        join_uri(config.output, f"runs/{run_id}/config.json"),
        json.dumps({**config.model_dump(mode="json"), "device": device, "dtype": dtype}, indent=2).encode(),
        config.s3,
    )

    sources = list_sources(config.input, config.s3)
    skip = _previous_successes(config)
    log.info(
        "run %s: %d sources, %d inputs already done, device %s, dtype %s",
        run_id,
        len(sources),
        len(skip),
        device,
        dtype,
    )

    low, high = config.concurrency
    ds = ray.data.from_items([asdict(s) for s in sources], override_num_blocks=max(1, min(len(sources), 200)))
    ds = ds.map_batches(
        ReadStage, fn_constructor_kwargs={"s3": config.s3, "skip": skip}, batch_size=4, compute=_cpu_pool()
    )
    ds = ds.map_batches(
        PrepareStage,
        fn_constructor_kwargs={
            "variant": config.variant,
            "resolution": config.resolution,
            "keep_bytes": "cutout" in config.outputs,
            "max_pixels": config.max_image_pixels,
        },
        batch_size=config.batch_size,
        compute=_cpu_pool(),
    )
    ds = ds.map_batches(
        InferenceStage,
        fn_constructor_kwargs={
            "weights": config.weights_source,
            "variant": config.variant,
            "resolution": config.resolution,
            "device": device,
            "dtype": dtype,
            "s3": config.s3,
            "weights_sha256": config.weights_sha256,
            "compile": config.compile,
            "channels_last": config.channels_last,
            "cpu_threads": config.cpu_threads,
        },
        batch_size=config.batch_size,
        compute=ActorPoolStrategy(min_size=low, max_size=high),
        num_gpus=gpus,
        num_cpus=1,
    )
    ds = ds.map_batches(
        FinishStage,
        fn_constructor_kwargs={
            "output": config.output,
            "outputs": config.outputs,
            "refine_foreground": config.refine_foreground,
            "s3": config.s3,
            "run": run_fields(run_id, config.variant, config.resolution),
        },
        batch_size=max(config.batch_size, 16),
        compute=_cpu_pool(),
    )
    ok = failed = 0
    errors: list[str] = []
    for row in ds.iter_rows():
        if row["status"] == "ok":
            ok += 1
        else:
            failed += 1
            errors.append(row["error"])
    return RunSummary(
        run_id,
        ok + failed,
        len(skip),
        ok,
        failed,
        time.perf_counter() - started,
        join_uri(config.output, "manifest"),
        errors,
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
