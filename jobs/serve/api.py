"""The HTTP contract of `POST /v1/segment`: parameters, body, errors and responses.

Kept apart from the Serve deployments so the contract reads in one place: what a client may
send (an image as the raw body or a multipart field; `output`, `box`, `refine_foreground`,
`background`, `format` as query or form fields), what it gets back (PNG, or JSON with base64 PNGs),
and which 4xx answers what.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from birefnet_core.box_guidance import Box

from ..common.options import Colour, CommaSeparated

__all__ = ["RequestError", "SegmentParams", "json_body", "read_limited"]

Output = Literal["mask", "cutout", "probabilities"]


class RequestError(Exception):
    """A client error: the HTTP status and a one-line reason for the JSON error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SegmentParams(BaseModel):
    """What a segmentation request asks for."""

    model_config = ConfigDict(extra="forbid")

    output: Annotated[list[Output], CommaSeparated] = Field(
        default_factory=lambda: cast(list[Output], ["mask"]),
        description="mask (8-bit PNG, as the job writes), cutout (RGBA PNG, or RGB over `background`), "
        "probabilities (16-bit PNG); several, comma-separated, with format=json.",
    )
    box: str | None = Field(None, description="x0,y0,x1,y1 in pixels: segment only what the box holds.")
    refine_foreground: bool = Field(False, description="Estimate foreground colours of the cut-out.")
    background: Colour | None = Field(None, description="Lay the cut-out over this colour (#rrggbb).")
    format: Literal["png", "json"] = Field("png", description="PNG bytes, or JSON with base64 PNGs.")

    @field_validator("box")
    @classmethod
    def _valid_box(cls, value: str | None) -> str | None:
        return str(Box.parse(value)) if value else None

    @model_validator(mode="after")
    def _one_png(self) -> SegmentParams:
        self.output = list(dict.fromkeys(self.output))
        if not self.output:
            raise ValueError("output must name mask, cutout or probabilities")
        if self.format == "png" and len(self.output) > 1:
            raise ValueError("a PNG answer holds one output; ask several with format=json")
        return self

    @property
    def guide_box(self) -> Box | None:
        return Box.parse(self.box) if self.box else None

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any], accept: str = "") -> SegmentParams:
        """Parameters from query and form fields; `Accept: application/json` means format=json."""
        values = dict(fields)
        if "format" not in values and "application/json" in accept and "image/png" not in accept:
            values["format"] = "json"
        if isinstance(values.get("refine_foreground"), str) and values["refine_foreground"] == "":
            values["refine_foreground"] = True  # ?refine_foreground
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = []
            for item in exc.errors():
                where = ".".join(str(p) for p in item["loc"])
                message = item["msg"].removeprefix("Value error, ")
                problems.append(f"{where}: {message}" if where else message)
            raise RequestError(400, "; ".join(problems)) from None


async def read_limited(chunks: AsyncIterator[bytes], declared: str | None, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it (or its Content-Length) passes `limit`."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body of {int(declared)} bytes exceeds the {limit} byte limit")
    body = bytearray()
    async for chunk in chunks:
        body.extend(chunk)
        if len(body) > limit:
            raise RequestError(413, f"request body exceeds the {limit} byte limit")
    return bytes(body)


def json_body(outputs: Mapping[str, bytes], width: int, height: int, box: str | None) -> dict[str, Any]:
    """The JSON answer: the image's size, the box used, and each output as base64 PNG."""
    encoded = {name: base64.b64encode(data).decode("ascii") for name, data in outputs.items()}
    return {"width": width, "height": height, "box": box, "media_type": "image/png", **encoded}
