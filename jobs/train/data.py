"""Training and validation data on Ray Data: pair listing on the driver, decoding and augmenting on CPU workers.

list pairs (connectors.training_pairs) -> split by key -> table of URIs -> map_batches(PairLoader):
read both files, decode (any format, 8/16-bit, 1-4 bands), augment (connectors.training_augment),
resize to the training size. Training rows carry uint8 ``image`` and ``mask`` arrays at that size;
validation rows carry the resized image and the original mask file's bytes, so scores are taken
at the ground truth's own size as the reference evaluation does. A pair that cannot be read is
logged and dropped; it never stops a run.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import ray

from birefnet_core.preprocessing import to_rgb_uint8
from birefnet_core.size import Size
from connectors.images import decode_image
from connectors.pairs import decode_mask
from connectors.storage import S3Options, read_bytes
from connectors.training_augment import augment_pair, resize_pair
from connectors.training_pairs import TrainingPair, list_training_pairs, pairs_table

from ..common.ray_startup import STAGE_OPTIONS

__all__ = ["TrainingData", "load_pairs", "split_pairs", "training_datasets", "training_pairs"]

log = logging.getLogger("jobs.train")


def _held_out(key: str, seed: int, fraction: float) -> bool:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_pairs(
    pairs: list[TrainingPair], seed: int, fraction: float
) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """(train, validation) by a hash of each key: stable when pairs are added or removed."""
    val = [p for p in pairs if _held_out(p.key, seed, fraction)]
    chosen = {p.key for p in val}
    return [p for p in pairs if p.key not in chosen], val


def _load(image_uri: str, mask_uri: str, size: Size, augmentations: list[str], s3: S3Options | None,
          rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray, bytes]:  # fmt: skip
    mask_bytes = read_bytes(mask_uri, s3)
    rgb = to_rgb_uint8(decode_image(read_bytes(image_uri, s3), image_uri))
    mask = decode_mask(mask_bytes, mask_uri)
    if rgb.shape[:2] != mask.shape:
        raise ValueError(
            f"{image_uri} is {rgb.shape[1]}x{rgb.shape[0]} but its mask is {mask.shape[1]}x{mask.shape[0]}"
        )
    if rng is not None and augmentations:
        rgb, mask = augment_pair(rgb, mask, rng, augmentations)
    rgb, resized = resize_pair(rgb, mask, *size)
    return rgb, resized, mask_bytes


def load_pairs(
    batch: dict[str, np.ndarray], size: Size, augmentations: list[str], s3: S3Options | None, train: bool
) -> dict[str, np.ndarray]:
    """Ray Data batch function: URIs in, decoded (and for training, augmented) arrays out.

    Augmentations draw from fresh OS entropy, so every epoch sees new ones (as the reference's
    data loader workers); validation rows are never augmented.
    """
    rng = np.random.default_rng() if train else None
    images, masks, originals, keys = [], [], [], []
    for key, image_uri, mask_uri in zip(batch["key"], batch["image_uri"], batch["mask_uri"], strict=True):
        try:
            rgb, mask, mask_bytes = _load(str(image_uri), str(mask_uri), size, augmentations, s3, rng)
        except (OSError, ValueError) as exc:
            log.warning("skipping training pair %s: %s", key, exc)
            continue
        images.append(rgb)
        masks.append(mask)
        originals.append(mask_bytes)
        keys.append(str(key))
    height, width = size
    out = {
        "key": np.array(keys, dtype=object),
        "image": np.stack(images) if images else np.zeros((0, height, width, 3), np.uint8),
    }
    if train:
        out["mask"] = np.stack(masks) if masks else np.zeros((0, height, width), np.uint8)
    else:
        out["mask_png"] = np.array(originals, dtype=object)
    return out


@dataclass(frozen=True)
class TrainingData:
    train: ray.data.Dataset
    val: ray.data.Dataset | None
    train_pairs: int
    val_pairs: int


def _dataset(
    pairs: list[TrainingPair], size: Size, augmentations: list[str], s3: S3Options | None, train: bool
) -> ray.data.Dataset:
    table: pa.Table = pairs_table(pairs)
    blocks = max(1, min(len(pairs) // 8, 64))
    dataset = ray.data.from_arrow(table).repartition(blocks)
    if train:  # a new block order every epoch; iter_torch_batches shuffles within a buffer too
        dataset = dataset.randomize_block_order()
    dataset = dataset.map_batches(
        load_pairs,  # type: ignore[arg-type]  # Ray's stubs omit map_batches' fn_kwargs, so extra parameters look wrong
        fn_kwargs={"size": size, "augmentations": augmentations, "s3": s3, "train": train},
        batch_size=8,
        num_cpus=1,
        **STAGE_OPTIONS,
    )
    return dataset.select_columns(["image", "mask"]) if train else dataset


def training_pairs(
    data: str, val_data: str | None, val_fraction: float, seed: int, s3: S3Options | None
) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """(train, validation) pairs; raises UnpairedFilesError / FileNotFoundError naming the root."""
    pairs = list_training_pairs(data, s3)
    train, val = (
        (pairs, list_training_pairs(val_data, s3)) if val_data else split_pairs(pairs, seed, val_fraction)
    )
    if not train:
        raise ValueError(f"{data}: no training pairs left after holding out {len(val)} for validation")
    log.info("%d training pairs, %d validation pairs", len(train), len(val))
    return train, val


def training_datasets(
    train: list[TrainingPair],
    val: list[TrainingPair],
    size: Size,
    augmentations: list[str],
    s3: S3Options | None,
) -> TrainingData:
    """The run's Ray datasets (nothing is read until a worker iterates them)."""
    return TrainingData(
        train=_dataset(train, size, augmentations, s3, train=True),
        val=_dataset(val, size, [], s3, train=False) if val else None,
        train_pairs=len(train),
        val_pairs=len(val),
    )
