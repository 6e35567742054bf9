"""What `birefnet predict` is asked to do: images in, masks and cut-outs out, on this machine."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from birefnet_core.box_guidance import DEFAULT_BOX_MARGIN, Box
from connectors.images import file_format

from ..common.options import Colour, ModelOptions, StorageOptions, absolute_local_path

__all__ = ["PredictConfig"]


class PredictConfig(ModelOptions, StorageOptions):
    """Images or folders in, `masks/` and `cutouts/` under the output folder (the job's layout);
    or one image in and the one file `output` names out (its mask, or its cut-out)."""

    model_config = ConfigDict(extra="forbid")

    images: list[str] = Field(
        ...,
        description="Image files, or folders searched recursively for images and .tar shards.",
        json_schema_extra={"positional": True},
    )
    output: str = Field(
        ...,
        description="Folder (or URI) to write masks/ and cutouts/ to; for one input image, a file "
        "(.png, .jpg, .webp) to write its mask to, or its cut-out with --cutout.",
        json_schema_extra={"short": "-o"},
    )
    only_mask: bool = Field(False, description="Write only the masks (no cut-outs).")
    cutout: bool = Field(False, description="Write only the cut-outs (no masks).")
    bgcolor: Colour | None = Field(
        None, description="Lay cut-outs over this colour (#rrggbb or R,G,B) instead of transparency."
    )
    refine_foreground: bool = Field(
        False, description="Estimate foreground colours for cut-outs (removes halos)."
    )
    box: str | None = Field(
        None, description="Segment only what the box x0,y0,x1,y1 (pixels) holds, in every image."
    )
    box_margin: float = Field(
        DEFAULT_BOX_MARGIN,
        ge=0,
        le=4,
        description="Context the network sees around the box, as a fraction of its size on each side.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the model runs; auto = cuda when this machine has a GPU, else cpu."
    )
    cpu_threads: int | None = Field(None, ge=1, description="Torch threads on CPU; default: all cores.")
    batch_size: int = Field(4, ge=1, le=256, description="Images per inference batch.")
    max_image_pixels: int = Field(
        200_000_000, ge=1, description="Refuse larger images (decompression bombs)."
    )

    @field_validator("images")
    @classmethod
    def _some_images(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one image or folder")
        return [absolute_local_path(v) or v for v in value]

    @field_validator("output")
    @classmethod
    def _absolute_output(cls, value: str) -> str:
        return absolute_local_path(value) or value

    @field_validator("box")
    @classmethod
    def _valid_box(cls, value: str | None) -> str | None:
        return str(Box.parse(value)) if value is not None else None

    @model_validator(mode="after")
    def _one_choice_of_outputs(self) -> PredictConfig:
        if self.only_mask and self.cutout:
            raise ValueError("--only-mask and --cutout exclude each other (the default writes both)")
        if (self.only_mask or (self.output_file and not self.cutout)) and (
            self.bgcolor is not None or self.refine_foreground
        ):
            raise ValueError(
                "--bgcolor and --refine-foreground shape cut-outs, which --only-mask (or a mask file as -o) turns off"
            )
        if self.cutout and self.bgcolor is None and file_format(self.output) == "JPEG":
            raise ValueError(
                f"{self.output}: JPEG holds no transparency; name a .png or .webp file, or give --bgcolor"
            )
        return self

    @property
    def output_file(self) -> str | None:
        """The one file to write when `output` ends in an image suffix, else None (a folder). A
        folder that exists already stays a folder, whatever its name (as before files were allowed)."""
        return self.output if file_format(self.output) and not os.path.isdir(self.output) else None

    @property
    def outputs(self) -> list[str]:
        """What to write: mask, cutout, or both (the default); into one file, the mask unless --cutout."""
        if self.only_mask or (self.output_file and not self.cutout):
            return ["mask"]
        return ["cutout"] if self.cutout else ["mask", "cutout"]
