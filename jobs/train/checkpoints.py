"""One training checkpoint: the weights (released key names) and everything a resume needs.

A checkpoint folder holds ``model.safetensors`` (loadable by ``birefnet_core.load_model``, like a
release), ``training_state.pt`` (optimiser, schedule, gradient scaler, progress counters, RNG
states) and ``checkpoint.json`` (progress, metrics and the run's config, for people).
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from birefnet_core.weights import load_state_dict, state_dict_bytes
from connectors.storage import S3Options, join_uri, list_files, read_bytes

__all__ = [
    "INFO_FILE",
    "MODEL_FILE",
    "STATE_FILE",
    "Progress",
    "latest_complete_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]

MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
INFO_FILE = "checkpoint.json"


@dataclass
class Progress:
    """Where a run stands: optimiser steps done, epochs finished, batches into the current epoch."""

    step: int = 0
    epoch: int = 0
    epoch_batches: int = 0
    #: The step each resume of this run started from, in order.
    resumed_from: list[int] = field(default_factory=list)


def save_checkpoint(
    directory: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    progress: Progress,
    metrics: dict[str, Any],
    config: dict[str, Any],
) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, MODEL_FILE), "wb") as handle:
        handle.write(state_dict_bytes(model.state_dict(), metadata={"step": str(progress.step)}))
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "progress": asdict(progress),
        "torch_rng": torch.get_rng_state(),
    }
    torch.save(state, os.path.join(directory, STATE_FILE))
    sizes = {name: os.path.getsize(os.path.join(directory, name)) for name in (MODEL_FILE, STATE_FILE)}
    info = {"progress": asdict(progress), "metrics": metrics, "config": config, "file_sizes": sizes}
    with open(os.path.join(directory, INFO_FILE), "w") as handle:
        json.dump(info, handle, indent=2, default=str)


def load_checkpoint(
    directory: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
) -> Progress:
    """Restore everything `save_checkpoint` wrote into the given objects; returns the progress."""
    state_dict, _ = load_state_dict(os.path.join(directory, MODEL_FILE))
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()}, strict=True)
    state = torch.load(os.path.join(directory, STATE_FILE), map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    return Progress(**state["progress"])


def latest_complete_checkpoint(run_uri: str, s3: S3Options | None = None) -> str | None:
    """URI of the newest checkpoint folder under `run_uri` whose files are all there and whole.

    Ray Train resumes from its own record of reported checkpoints, which it writes after the
    upload; a run killed in between leaves a folder the record does not list yet, and one killed
    during the upload leaves a partial folder. ``checkpoint.json`` states the other files' sizes,
    so a folder counts only when it parses and every size matches.
    """
    try:
        entries = list_files(run_uri, None, s3)
    except FileNotFoundError:
        return None
    folders: dict[str, dict[str, int]] = {}
    for entry in entries:
        folder, name = posixpath.split(entry.relative_path)
        if folder.startswith("checkpoint_") and "/" not in folder:
            folders.setdefault(folder, {})[name] = entry.size
    for folder in sorted(folders, reverse=True):  # Ray names them by time
        sizes = folders[folder]
        if INFO_FILE not in sizes:
            continue
        try:
            info = json.loads(read_bytes(join_uri(run_uri, f"{folder}/{INFO_FILE}"), s3))
            expected = info["file_sizes"]
        except (ValueError, KeyError):
            continue
        if all(sizes.get(name) == size for name, size in expected.items()):
            return join_uri(run_uri, folder)
    return None
