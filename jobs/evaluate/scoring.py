"""Per-image scores: one pair read, resized and scored, in a local loop or as a Ray Data map.

Only the per-image numbers are computed here, wherever is fastest; the dataset numbers are
accumulated on the driver in pair order (``aggregation``), so both ways give identical results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from birefnet_core.metrics import ImageScores, SODEvaluator, resize_to
from connectors.pairs import MaskPair, read_mask
from connectors.storage import S3Options, StorageAuthError

#: Pairs per Ray Data block and batch: small, because one pair takes up to seconds (wF, HCE).
RAY_PAIRS_PER_BLOCK = 4
_SCALARS = ("S", "MAE", "wF", "adpF", "adpE", "HCE")


@dataclass(frozen=True)
class PairScore:
    """One pair's outcome: sizes as read, and its scores, or the error that stopped it."""

    pair: MaskPair
    pred_size: tuple[int, int] | None = None  # (height, width) before resizing
    gt_size: tuple[int, int] | None = None
    scores: ImageScores | None = None
    error: str | None = None


def score_pair(pair: MaskPair, s3: S3Options | None = None, hce: bool = True) -> PairScore:
    """Read both masks, resize the prediction to the ground truth's size, score it.

    An unreadable or missing file becomes ``PairScore.error`` naming it; rejected credentials
    raise, since every other pair would fail the same way.
    """
    try:
        pred = read_mask(pair.pred_uri, s3)
        gt = read_mask(pair.gt_uri, s3)
        scores = SODEvaluator(hce=hce).step(resize_to(pred, gt.shape), gt)
    except StorageAuthError:
        raise
    except (OSError, ValueError) as exc:  # ImageDecodeError is a ValueError
        return PairScore(pair, error=str(exc))
    return PairScore(pair, (pred.shape[0], pred.shape[1]), (gt.shape[0], gt.shape[1]), scores)


def score_pairs_local(
    pairs: list[MaskPair], s3: S3Options | None = None, hce: bool = True
) -> list[PairScore]:
    """Score pairs one after the other in this process."""
    return [score_pair(pair, s3, hce) for pair in pairs]


def _score_batch(batch: dict[str, np.ndarray], s3: S3Options | None, hce: bool) -> dict[str, np.ndarray]:
    """Ray Data map: pair URIs in, sizes + scores (NaN-filled on error) out, keyed by pair index."""
    n = len(batch["index"])
    out: dict[str, Any] = {
        "index": np.asarray(batch["index"], np.int64),
        "error": np.array([""] * n, dtype=object),
        "size": np.full((n, 4), -1, np.int64),
        **{name: np.full(n, np.nan) for name in _SCALARS},
        "F_curve": np.full((n, 256), np.nan),
        "E_curve": np.full((n, 256), np.nan),
    }
    for i in range(n):
        pair = MaskPair(str(batch["key"][i]), str(batch["pred_uri"][i]), str(batch["gt_uri"][i]), "")
        result = score_pair(pair, s3, hce)
        if result.scores is None or result.pred_size is None or result.gt_size is None:
            out["error"][i] = result.error
            continue
        out["size"][i] = (*result.pred_size, *result.gt_size)
        for name in _SCALARS:
            value = getattr(result.scores, name)
            out[name][i] = np.nan if value is None else value
        out["F_curve"][i] = result.scores.F_curve
        out["E_curve"][i] = result.scores.E_curve
    return out


def score_pairs_ray(
    pairs: list[MaskPair], s3: S3Options | None = None, hce: bool = True, workers: int | None = None
) -> list[PairScore]:
    """Score pairs as a Ray Data map over the running Ray; results come back in ``pairs`` order."""
    import ray

    if not pairs:
        return []
    items = [
        {"index": i, "key": p.key, "pred_uri": p.pred_uri, "gt_uri": p.gt_uri} for i, p in enumerate(pairs)
    ]
    ds: ray.data.Dataset = ray.data.from_items(
        items, override_num_blocks=math.ceil(len(items) / RAY_PAIRS_PER_BLOCK)
    )
    ds = ds.map_batches(
        _score_batch,  # type: ignore[arg-type]  # Ray's stubs omit map_batches' fn_kwargs, so extra parameters look wrong
        batch_size=RAY_PAIRS_PER_BLOCK,
        batch_format="numpy",
        fn_kwargs={"s3": s3, "hce": hce},
        concurrency=workers,
    )
    results: list[PairScore | None] = [None] * len(pairs)
    for row in ds.iter_rows():
        i = int(row["index"])
        if row["error"]:
            results[i] = PairScore(pairs[i], error=str(row["error"]))
            continue
        ph, pw, gh, gw = (int(v) for v in row["size"])
        scalars: dict[str, Any] = {name: float(row[name]) for name in _SCALARS}
        scores = ImageScores(
            **{**scalars, "HCE": scalars["HCE"] if hce else None},
            F_curve=np.asarray(row["F_curve"], np.float64),
            E_curve=np.asarray(row["E_curve"], np.float64),
        )
        results[i] = PairScore(pairs[i], (ph, pw), (gh, gw), scores)
    lost = [pairs[i].key for i, r in enumerate(results) if r is None]
    if lost:
        raise RuntimeError(f"Ray returned no result for {len(lost)} pairs, e.g. {lost[:3]}")
    return [r for r in results if r is not None]
