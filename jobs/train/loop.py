"""The loop every Ray Train worker runs: DDP training with BiRefNet's supervision, validation, checkpoints.

Per worker: build the model (random, a release, or any weights `load_model` takes), AdamW, a
per-step schedule and, on resume, everything from the latest checkpoint Ray Train hands back.
Every worker sees the same number of batches per epoch (its shard is cut to `steps_per_epoch`),
so DDP's collectives never wait on a worker that ran out. All workers report together at each
checkpoint; rank 0 writes the checkpoint and scores the validation set with pysodmetrics.
"""

from __future__ import annotations

import logging
import math
import posixpath
import tempfile
import time
from contextlib import nullcontext
from typing import Any, cast

import numpy as np
import ray.train
import ray.train.torch
import torch
from torch.nn.parallel import DistributedDataParallel

from birefnet_core.losses import BiRefNetLoss, finetune_weights
from birefnet_core.metrics import SODEvaluator
from birefnet_core.model import create_model
from birefnet_core.postprocessing import resize_mask
from birefnet_core.preprocessing import normalize_batch
from birefnet_core.size import Size
from birefnet_core.variants import IMAGENET_MEAN, IMAGENET_STD
from birefnet_core.weights import RANDOM_WEIGHTS, load_model
from connectors.filesystems import arrow_filesystem
from connectors.pairs import decode_mask
from connectors.storage import open_input

from .checkpoints import Progress, load_checkpoint, save_checkpoint
from .config import TrainConfig

__all__ = ["lr_factor", "train_loop"]

log = logging.getLogger("jobs.train")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def lr_factor(step: int, config: TrainConfig, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of the base rate at optimiser step `step`: warm-up, then the schedule."""
    warmup = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    if config.lr_schedule == "cosine":
        return warmup * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))
    if config.lr_schedule == "step":
        epoch = step // max(1, steps_per_epoch)
        milestones = [e if e > 0 else config.epochs + e for e in config.lr_decay_epochs]
        return warmup * config.lr_decay_rate ** sum(epoch >= m for m in milestones)
    return warmup


def _initial_model(config: TrainConfig) -> torch.nn.Module:
    source = config.initial_weights
    if source == RANDOM_WEIGHTS:
        torch.manual_seed(config.seed)
        return create_model(config.model_backbone)
    storage = config.s3
    return load_model(source, variant=config.variant, opener=lambda uri: open_input(uri, storage))


def _checkpoint_at(uri: str | None, config: TrainConfig) -> ray.train.Checkpoint | None:
    """The newest complete checkpoint folder the driver found, when Ray Train has none to hand back
    (its record of reported checkpoints is written after the upload, so a kill can fall between)."""
    if uri is None:
        return None
    filesystem, path = arrow_filesystem(uri, config.s3)
    return ray.train.Checkpoint(path=path, filesystem=filesystem)


def _batches(shard: Any, config: TrainConfig, count: int, device: torch.device) -> Any:
    """Exactly `count` training batches of this worker's shard, as normalised tensors on `device`."""
    batches = shard.iter_torch_batches(
        batch_size=config.batch_size, drop_last=True, local_shuffle_buffer_size=4 * config.batch_size,
        local_shuffle_seed=None, dtypes={"image": torch.uint8, "mask": torch.uint8}, device=device,
    )  # fmt: skip
    for index, batch in enumerate(batches):
        if index >= count:
            return
        images = normalize_batch(batch["image"], IMAGENET_MEAN, IMAGENET_STD)
        yield images, batch["mask"][:, None].float().div_(255)


def _validate(
    model: torch.nn.Module, shard: Any, config: TrainConfig, device: torch.device
) -> dict[str, float]:
    """S, MAE, max F and weighted F over the validation set, each prediction at its mask's size."""
    evaluator = SODEvaluator(hce=False)
    autocast = _autocast(config, device)
    model.eval()
    with torch.no_grad():
        for batch in shard.iter_batches(batch_size=config.batch_size, batch_format="numpy"):
            images = normalize_batch(torch.from_numpy(batch["image"]).to(device), IMAGENET_MEAN, IMAGENET_STD)
            with autocast:
                probabilities = torch.sigmoid(model(images).float())[:, 0]
            predictions = (probabilities * 255).round().to(torch.uint8).cpu().numpy()
            for prediction, png, key in zip(predictions, batch["mask_png"], batch["key"], strict=True):
                gt = decode_mask(bytes(png), str(key))
                evaluator.step(resize_mask(prediction, Size(*gt.shape)), gt)
    model.train()
    results = evaluator.results()
    return {f"val_{name}": float(results[name]) for name in ("S", "MAE", "maxF", "wF")}


def _autocast(config: TrainConfig, device: torch.device) -> Any:
    dtype = _AUTOCAST.get(config.precision)
    return torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()


def train_loop(loop_config: dict[str, Any]) -> None:
    config = TrainConfig.model_validate(loop_config["config"])
    steps_per_epoch: int = loop_config["steps_per_epoch"]  # optimiser steps
    total_steps: int = loop_config["total_steps"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(config.cpus_per_worker)))
    device = ray.train.torch.get_device()

    model = _initial_model(config).to(device).train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config, steps_per_epoch, total_steps)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    progress = Progress()
    found = (ray.train.get_checkpoint(), _checkpoint_at(loop_config["newest_checkpoint"], config))
    # Ray names checkpoint folders by time, so the later name is the newer state.
    checkpoint = max(
        (c for c in found if c), key=lambda c: posixpath.basename(c.path.rstrip("/")), default=None
    )
    if checkpoint:
        with checkpoint.as_directory() as directory:
            progress = load_checkpoint(directory, model, optimizer, scheduler, scaler)
        progress.resumed_from.append(progress.step)
        if rank == 0:
            log.info(
                "resuming at step %d (epoch %d, batch %d)",
                progress.step,
                progress.epoch,
                progress.epoch_batches,
            )
    ddp = ray.train.torch.prepare_model(model, move_to_device=False)
    accumulation = config.grad_accumulation
    config_json = config.model_dump(mode="json")

    reported = []

    def report(metrics: dict[str, Any]) -> None:
        """Every worker reports; rank 0 attaches the checkpoint (Ray Train keeps the newest N)."""
        reported.append(progress.step)
        metrics = {**metrics, "step": progress.step, "epoch": progress.epoch}
        if rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory() as directory:
            save_checkpoint(directory, model, optimizer, scheduler, scaler, progress, metrics, config_json)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))

    while progress.epoch < config.epochs and progress.step < total_steps:
        finetuning = progress.epoch >= config.epochs - config.finetune_epochs
        criterion = BiRefNetLoss(
            finetune_weights(config.weights, config.task) if finetuning else config.weights
        )
        remaining = min(steps_per_epoch - progress.epoch_batches // accumulation, total_steps - progress.step)
        shard = ray.train.get_dataset_shard("train")
        started, seen, losses = None, 0, []
        for index, (images, masks) in enumerate(_batches(shard, config, remaining * accumulation, device)):
            if started is None:  # the clock starts at the first batch: pipeline start-up is not speed
                started = time.perf_counter()
            else:
                seen += images.shape[0]
            last_micro = (index + 1) % accumulation == 0
            skip_sync = (
                cast(DistributedDataParallel, ddp).no_sync if world > 1 and not last_micro else nullcontext
            )
            with skip_sync(), _autocast(config, device):
                loss = criterion(ddp(images), masks)
            scaler.scale(loss / accumulation).backward()
            progress.epoch_batches += 1
            if not last_micro:
                continue
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            progress.step += 1
            losses.append(criterion.terms["total"])
            if rank == 0 and progress.step % config.log_every_steps == 0:
                terms = " ".join(f"{k} {v:.4g}" for k, v in criterion.terms.items())
                log.info("epoch %d step %d/%d: %s, lr %.3g", progress.epoch + 1, progress.step, total_steps, terms,
                         scheduler.get_last_lr()[0])  # fmt: skip
            ending = progress.epoch_batches >= steps_per_epoch * accumulation or progress.step >= total_steps
            if (
                config.checkpoint_every_steps
                and progress.step % config.checkpoint_every_steps == 0
                and not ending
            ):
                report({"loss": float(np.mean(losses[-config.checkpoint_every_steps :]))})
        if started is None:
            raise RuntimeError(
                "no training batch could be read (every pair failed to load; see the warnings)"
            )
        epoch_done = progress.epoch_batches >= steps_per_epoch * accumulation
        if epoch_done:
            progress.epoch, progress.epoch_batches = progress.epoch + 1, 0
        metrics: dict[str, Any] = {
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "lr": scheduler.get_last_lr()[0],
            "samples_per_second": seen * world / (time.perf_counter() - started) if started and seen else 0.0,
            "finetuning": finetuning,
        }
        if rank == 0 and (epoch_done or progress.step >= total_steps):
            val = ray.train.get_dataset_shard("val") if loop_config["has_val"] else None
            if val is not None:
                metrics.update(_validate(model, val, config, device))  # not via DDP: no collectives
            log.info("epoch %d done at step %d: %s", progress.epoch, progress.step, metrics)
        report(metrics)
    if not reported:  # resumed a finished run: hand its state back as this run's result
        report({"loss": float("nan"), "already_complete": True})
