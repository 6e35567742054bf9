"""What an export is asked to do: the validated options of `birefnet export`."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from birefnet_core.backend import is_onnx_file
from birefnet_core.onnx_export import DEFAULT_OPSET, MIN_OPSET, OnnxExportSettings
from birefnet_core.size import Size
from birefnet_core.variants import VARIANTS

from ..common.options import Resolution, StorageOptions, WeightsOptions

__all__ = ["ExportConfig"]


class ExportConfig(WeightsOptions, StorageOptions):
    """One model, one file."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["onnx"] = Field("onnx", description="File format to write.")
    output: str = Field(..., description="Where the .onnx file goes (local path or S3 URI).")
    opset: int = Field(DEFAULT_OPSET, ge=MIN_OPSET, description="ONNX opset to target.")
    dynamic: bool = Field(
        True,
        description="Dynamic batch and H/W (any multiples of 32); --no-dynamic writes a fixed-size graph.",
    )
    fp16: bool = Field(
        False, description="Weights and compute in float16 (for GPUs); inputs and outputs stay float32."
    )
    resolution: Resolution | None = Field(
        None,
        description="WxH of a fixed-size graph (needs --no-dynamic); default: the variant's working size.",
    )
    batch: int = Field(1, ge=1, description="Batch size of a fixed-size graph (needs --no-dynamic).")

    @field_validator("output")
    @classmethod
    def _onnx_file(cls, value: str) -> str:
        if not is_onnx_file(value):
            raise ValueError(f"{value!r} is not an .onnx file name")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ExportConfig:
        if self.dynamic and self.resolution is not None:
            raise ValueError("--resolution fixes the graph's size; add --no-dynamic, or drop --resolution")
        if self.dynamic and self.batch != 1:
            raise ValueError("--batch fixes the graph's batch; add --no-dynamic, or drop --batch")
        if not self.dynamic and self.working_size is None:
            raise ValueError(f"variant {self.variant!r} has no fixed working size; give --resolution")
        return self

    @property
    def working_size(self) -> Size | None:
        if self.resolution:
            return Size(height=self.resolution[1], width=self.resolution[0])
        return VARIANTS[self.variant].size

    @property
    def settings(self) -> OnnxExportSettings:
        return OnnxExportSettings(
            opset=self.opset,
            dynamic=self.dynamic,
            fp16=self.fp16,
            resolution=None if self.dynamic else self.working_size,
            batch=self.batch,
        )
