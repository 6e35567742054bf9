"""The driver of a training run: data, a TorchTrainer, and the final model where people look for it.

Checkpoints go to ``<output>/<name>/checkpoint_*`` (Ray Train's layout, newest `keep_checkpoints`
kept). Ray Train resumes a run whose ``(output, name)`` already holds checkpoints, so rerunning
the same command after a crash continues from the latest one. When the run ends, its newest
weights are written to ``<output>/<name>/model.safetensors`` and its summary to
``<output>/<name>/training.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
import ray.train
import torch
from ray.train.torch import TorchTrainer

from birefnet_core.weights import load_state_dict, state_dict_bytes
from connectors.filesystems import arrow_filesystem
from connectors.storage import join_uri, write_bytes_atomic

from ..common.errors import JobError, root_cause
from ..common.ray_startup import start_ray
from .checkpoints import INFO_FILE, MODEL_FILE, latest_complete_checkpoint
from .config import TrainConfig
from .data import training_datasets, training_pairs
from .loop import train_loop

__all__ = ["TrainResult", "run"]

log = logging.getLogger("jobs.train")


@dataclass(frozen=True)
class TrainResult:
    model_uri: str
    summary_uri: str
    metrics: dict[str, Any]
    progress: dict[str, Any]


def _embedded_cpus(config: TrainConfig) -> int:
    """Logical CPUs for an embedded Ray: the workers' reservation plus room for the data tasks."""
    return config.num_cpus or max(
        os.cpu_count() or 1, math.ceil(config.num_workers * config.cpus_per_worker) + 1
    )


def _export(checkpoint: ray.train.Checkpoint, config: TrainConfig) -> tuple[str, dict[str, Any]]:
    """The checkpoint's weights as ``<output>/<name>/model.safetensors`` in the export dtype."""
    with checkpoint.as_directory() as directory:
        state_dict, _ = load_state_dict(os.path.join(directory, MODEL_FILE))
        with open(os.path.join(directory, INFO_FILE)) as handle:
            info = json.load(handle)
    metadata = {"backbone": config.model_backbone, "step": str(info["progress"]["step"])}
    data = state_dict_bytes(state_dict, getattr(torch, config.export_dtype), metadata)
    model_uri = join_uri(join_uri(config.output, config.name), MODEL_FILE)
    write_bytes_atomic(model_uri, data, config.s3)
    return model_uri, info


def run(config: TrainConfig) -> TrainResult:
    """Train (or resume) and export; job-level problems raise JobError or the storage error."""
    train_pairs, val_pairs = training_pairs(
        config.data, config.val_data, config.val_fraction, config.seed, config.s3
    )
    start_ray(config.ray_address, _embedded_cpus(config), config.object_store_memory, dashboard=True)
    size = config.size
    # Each worker streams its shard once per epoch; Ray Data's bars would fill the logs with one
    # set per epoch, and the loop already logs progress.
    ray.data.DataContext.get_current().enable_progress_bars = False
    data = training_datasets(train_pairs, val_pairs, size, config.augmentations, config.s3)
    per_step = config.batch_size * config.num_workers * config.grad_accumulation
    steps_per_epoch = data.train_pairs // per_step
    if steps_per_epoch == 0:
        raise JobError(
            f"{config.data}: {data.train_pairs} training pairs are fewer than one step's "
            f"{per_step} (batch size x workers x accumulation)"
        )
    total_steps = min(config.max_steps or steps_per_epoch * config.epochs, steps_per_epoch * config.epochs)
    log.info(
        "training %s at %dx%d: %d steps of %d images (%d per epoch), lr %.3g, %s",
        config.model_backbone, size.width, size.height, total_steps, per_step, steps_per_epoch,
        config.learning_rate, config.precision,
    )  # fmt: skip
    filesystem, storage_path = arrow_filesystem(config.output, config.s3)
    newest = latest_complete_checkpoint(join_uri(config.output, config.name), config.s3)
    if newest:
        log.info("found checkpoint %s; the run resumes from it (or from Ray Train's own record)", newest)
    datasets: dict[str, ray.data.Dataset | Callable[[], ray.data.Dataset]] = {"train": data.train}
    if data.val is not None:
        datasets["val"] = data.val
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "config": config.model_dump(mode="json"),
            "steps_per_epoch": steps_per_epoch,
            "total_steps": total_steps,
            "has_val": data.val is not None,
            "newest_checkpoint": newest,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.num_workers,
            use_gpu=config.use_gpu,
            resources_per_worker={"CPU": config.cpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name=config.name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=2),
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as exc:
        raise JobError(f"training failed: {root_cause(exc)}") from exc
    if result.checkpoint is None:
        raise JobError("training ended without a checkpoint")
    model_uri, info = _export(result.checkpoint, config)
    summary = {**info, "pairs": {"train": data.train_pairs, "val": data.val_pairs}, "model": model_uri}
    summary_uri = join_uri(join_uri(config.output, config.name), "training.json")
    write_bytes_atomic(summary_uri, json.dumps(summary, indent=2, default=str).encode(), config.s3)
    return TrainResult(model_uri, summary_uri, info["metrics"], info["progress"])
