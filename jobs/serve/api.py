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

__all__ = [
    "SEGMENT_OPENAPI",
    "SEGMENT_RESPONSES",
    "RequestError",
    "SegmentParams",
    "json_body",
    "read_limited",
]

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


def _parameters() -> list[dict[str, Any]]:
    """`SegmentParams` as OpenAPI query parameters (the route reads them itself, so FastAPI cannot)."""
    schema = SegmentParams.model_json_schema()
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": field.pop("description", ""),
            "schema": field,
        }
        for name, field in schema["properties"].items()
    ]


_ERROR = {"application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}}
_BINARY = {"type": "string", "format": "binary"}

#: What `POST /v1/segment` takes, for the service's OpenAPI document (and the docs made from it).
SEGMENT_OPENAPI: dict[str, Any] = {
    "parameters": _parameters(),
    "requestBody": {
        "required": True,
        "description": "The image (JPEG, PNG, WebP, TIFF, ...) as the raw body, or as the file field of "
        "a multipart form whose other fields are the parameters above.",
        "content": {
            "image/*": {"schema": _BINARY},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"image": _BINARY}, "required": ["image"]}
            },
        },
    },
}

#: What `POST /v1/segment` answers.
SEGMENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "format=png: the one output asked for as PNG, the image's size in the "
        "X-Image-Width and X-Image-Height headers. format=json: the size, the box used and each "
        "output as base64 PNG.",
        "content": {
            "image/png": {"schema": _BINARY},
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "width": {"type": "integer"},
                        "height": {"type": "integer"},
                        "box": {"type": ["string", "null"]},
                        "media_type": {"type": "string", "const": "image/png"},
                        **{
                            name: {"type": "string", "contentEncoding": "base64"}
                            for name in ("mask", "cutout", "probabilities")
                        },
                    },
                }
            },
        },
    },
    400: {"description": "Invalid parameters, no image, or a box outside the image.", "content": _ERROR},
    413: {"description": "The body or the image is larger than the service's limits.", "content": _ERROR},
    422: {"description": "The body is not a decodable image.", "content": _ERROR},
}
