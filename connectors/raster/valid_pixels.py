"""Which pixels hold data: nodata values, NaN, alpha bands and GDAL masks, merged into one boolean mask."""

from __future__ import annotations

from typing import Any

import numpy as np


def valid_mask(
    dataset: Any, bands: list[int], data: np.ndarray, window: Any = None, out_shape: Any = None
) -> np.ndarray:
    """True where every band in ``bands`` holds data (``data`` is their read, same order).

    Nodata values are compared on the data already read; alpha bands and internal/external
    masks need GDAL's mask read. NaN never counts as data, even without a declared nodata.
    """
    from rasterio.enums import MaskFlags

    valid = np.ones(data.shape[1:], bool)
    needs_mask_read: list[int] = []
    for i, band in enumerate(bands):
        flags = dataset.mask_flag_enums[band - 1]
        nodata = dataset.nodatavals[band - 1]
        if nodata is not None:
            valid &= ~np.isnan(data[i]) if np.isnan(nodata) else data[i] != nodata
        if data.dtype.kind == "f":
            valid &= ~np.isnan(data[i])
        if MaskFlags.all_valid not in flags and MaskFlags.nodata not in flags:
            needs_mask_read.append(band)
    if needs_mask_read and all(
        MaskFlags.per_dataset in dataset.mask_flag_enums[b - 1] for b in needs_mask_read
    ):
        needs_mask_read = needs_mask_read[:1]  # alpha or dataset mask: one read serves every band
    if needs_mask_read:
        shape = None if out_shape is None else (len(needs_mask_read), *out_shape[-2:])
        masks = dataset.read_masks(needs_mask_read, window=window, out_shape=shape)
        valid &= (masks != 0).all(axis=0)
    return valid
