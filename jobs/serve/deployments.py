"""The service's two Ray Serve deployments and the application that binds them.

`SegmentModel` holds one model replica (built exactly as the job's inference actors build it) and
batches concurrent requests with `@serve.batch`; it runs where the GPUs are. `SegmentIngress` is
the HTTP side (FastAPI): it reads and checks the request, decodes and resizes the image, awaits
the model, and encodes the answer, on CPU replicas that scale apart from the model's. The image
path is the job's (`jobs.common.image_prediction`), so a mask served equals the mask the job writes.
"""

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import ray
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.util.metrics import Counter, Histogram
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from birefnet_core.postprocessing import full_size_mask, full_size_probabilities
from birefnet_core.precision import cpu_has_native_bf16
from birefnet_core.quantization import quantize_probabilities
from birefnet_core.variants import get_variant
from connectors.images import ImageDecodeError, encode_mask_png, encode_probabilities_png, read_header

from ..common.cli import build_config
from ..common.image_prediction import PreparedInput, cutout_png, prepare_encoded
from ..common.replicas import ReplicaSpec, load_predictor, local_device
from .api import SEGMENT_OPENAPI, SEGMENT_RESPONSES, RequestError, SegmentParams, json_body, read_limited
from .config import ServeConfig

__all__ = ["SegmentIngress", "SegmentModel", "build_app"]

log = logging.getLogger("jobs.serve")

PAGE = (Path(__file__).parent / "page" / "index.html").read_text()
#: What uploads are called in error messages (clients send bytes, not names).
UPLOAD = "the uploaded image"
_LATENCY_BOUNDARIES = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

api = FastAPI(title="BiRefNet", docs_url=None, redoc_url=None)


@serve.deployment
class SegmentModel:
    """One model replica; concurrent requests are run as batches of one working size."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        config = ServeConfig.model_validate(settings)
        self.device = local_device(config.device)
        dtype = config.resolved_dtype(self.device, cpu_has_native_bf16())
        spec = ReplicaSpec.of(
            config,
            device=self.device,
            dtype=dtype,
            batch_size=config.max_batch_size,
            cpu_threads=config.cpu_threads,
        )
        self.predictor, self.identity = load_predictor(spec)
        self.batch_size = config.max_batch_size
        # serve.batch adds these setters to the method at run time; Serve's stubs do not know them.
        self.infer.set_max_batch_size(config.max_batch_size)  # type: ignore[attr-defined]  # see above
        self.infer.set_batch_wait_timeout_s(config.batch_wait_timeout_s)  # type: ignore[attr-defined]  # see above
        self.batch_sizes = Histogram(
            "birefnet_serve_batch_size",
            description="Requests per model call.",
            boundaries=[1, 2, 4, 8, 16, 32, 64],
        )

    def describe(self) -> dict[str, Any]:
        """What this replica runs (for /healthz)."""
        return {
            "device": self.device,
            "dtype": self.identity.dtype,
            "backend": self.identity.backend,
            "weights_sha256": self.identity.weights_sha256,
        }

    def _run(self, items: list[tuple[np.ndarray, bool]]) -> list[np.ndarray]:
        results: list[np.ndarray | None] = [None] * len(items)
        groups: dict[tuple[tuple[int, ...], bool], list[int]] = {}
        for index, (pixels, quantize) in enumerate(items):
            groups.setdefault((pixels.shape, quantize), []).append(index)
        for (_, quantize), indices in groups.items():
            batch = np.stack([items[i][0] for i in indices])
            for i, out in zip(
                indices, self.predictor.infer_batches(batch, self.batch_size, quantize), strict=True
            ):
                results[i] = out
        return cast(list[np.ndarray], results)  # every index is in exactly one group

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def infer(self, items: list[tuple[np.ndarray, bool]]) -> list[np.ndarray]:
        """Working-size pixels -> probabilities (uint8 levels when quantised, else float32)."""
        self.batch_sizes.observe(len(items))
        return await asyncio.get_running_loop().run_in_executor(None, self._run, items)


async def _image_and_fields(request: Request, body: bytes, limit: int) -> tuple[bytes, dict[str, Any]]:
    """The image bytes (raw body, or the multipart file field) and the request's parameters."""
    fields: dict[str, Any] = dict(request.query_params)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return body, fields

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=16, max_part_size=limit)
    except MultiPartException as exc:
        raise RequestError(400, f"malformed multipart body: {exc.message}") from None
    files = [value for value in form.values() if isinstance(value, UploadFile)]
    if not files:
        raise RequestError(400, "the multipart body has no file field (send the image as 'image')")
    fields.update({key: value for key, value in form.items() if isinstance(value, str)})
    return await files[0].read(), fields


def _output_tag(asked: str) -> str:
    """The metrics tag of a request's output: what was asked when valid, so that clients cannot
    grow the number of series without bound."""
    names = asked.split(",")
    return asked if set(names) <= {"mask", "cutout", "probabilities"} and len(names) <= 3 else "invalid"


# Serve ships this class to its replicas by value: what its methods call is defined above it.
@serve.deployment
@serve.ingress(api)
class SegmentIngress:
    """HTTP: the page at `/`, `GET /healthz`, `POST /v1/segment`."""

    def __init__(self, model: DeploymentHandle, settings: Mapping[str, Any]) -> None:
        self.model = model
        self.config = ServeConfig.model_validate(settings)
        self.variant = get_variant(self.config.variant)
        self.requests = Counter(
            "birefnet_serve_requests",
            description="Segmentation requests by HTTP status and output.",
            tag_keys=("status", "output"),
        )
        self.latency = Histogram(
            "birefnet_serve_request_seconds",
            description="Time from request to answer, by output.",
            boundaries=_LATENCY_BOUNDARIES,
            tag_keys=("output",),
        )

    @api.get("/", response_class=HTMLResponse)
    async def page(self) -> HTMLResponse:
        """The web page: drop an image, see its mask and cut-out."""
        return HTMLResponse(PAGE)

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        """The variant and what each model replica runs (device, dtype, backend, weights)."""
        return {"status": "ok", "variant": self.config.variant, **await self.model.describe.remote()}

    def _prepare(self, data: bytes, params: SegmentParams) -> PreparedInput:
        if not data:
            raise RequestError(400, "no image in the request (send it as the body or a multipart field)")
        try:
            header = read_header(data, UPLOAD, max_pixels=2**62)
        except ImageDecodeError as exc:
            raise RequestError(422, str(exc)) from None
        limit = self.config.max_image_pixels
        if header.width * header.height > limit:
            raise RequestError(
                413, f"{UPLOAD}: {header.width}x{header.height} exceeds the {limit} pixel limit"
            )
        try:
            return prepare_encoded(
                data, UPLOAD, self.variant, self.config.working_size, limit, params.guide_box,
                self.config.box_margin,
            )  # fmt: skip
        except ImageDecodeError as exc:
            raise RequestError(422, str(exc)) from None
        except ValueError as exc:  # the box against the image
            raise RequestError(400, str(exc)) from None

    def _render(
        self, data: bytes, prepared: PreparedInput, probabilities: np.ndarray, params: SegmentParams
    ) -> dict[str, bytes]:
        exact = probabilities.dtype != np.uint8
        levels = quantize_probabilities(probabilities) if exact else probabilities
        mask = full_size_mask(levels, prepared.size, prepared.guide)
        outputs: dict[str, bytes] = {}
        for name in params.output:
            if name == "mask":
                outputs[name] = encode_mask_png(mask)
            elif name == "cutout":
                outputs[name] = cutout_png(data, UPLOAD, mask, params.refine_foreground, params.background)
            else:
                full = full_size_probabilities(probabilities, prepared.size, prepared.guide)
                outputs[name] = encode_probabilities_png(full)
        return outputs

    async def _segment(self, request: Request) -> Response:
        limit = self.config.max_body_bytes
        body = await read_limited(request.stream(), request.headers.get("content-length"), limit)
        data, fields = await _image_and_fields(request, body, limit)
        params = SegmentParams.from_fields(fields, request.headers.get("accept", ""))
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(None, self._prepare, data, params)
        exact = "probabilities" in params.output
        probabilities = await self.model.infer.remote((prepared.pixels, not exact))
        outputs = await loop.run_in_executor(None, self._render, data, prepared, probabilities, params)
        height, width = prepared.size
        if params.format == "json":
            return JSONResponse(json_body(outputs, width, height, params.box))
        (png,) = outputs.values()
        headers = {"X-Image-Width": str(width), "X-Image-Height": str(height)}
        return Response(png, media_type="image/png", headers=headers)

    @api.post("/v1/segment", openapi_extra=SEGMENT_OPENAPI, responses=SEGMENT_RESPONSES)
    async def segment(self, request: Request) -> Response:
        """Segment one image: its mask, cut-out or probabilities."""
        started = time.perf_counter()
        try:
            response = await self._segment(request)
        except RequestError as exc:
            response = JSONResponse({"error": exc.message}, status_code=exc.status)
        output = _output_tag(request.query_params.get("output", "mask"))
        self.requests.inc(tags={"status": str(response.status_code), "output": output})
        self.latency.observe(time.perf_counter() - started, tags={"output": output})
        return response


def _cluster_has_gpus() -> bool:
    return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0


def build_app(settings: ServeConfig | Mapping[str, Any]) -> serve.Application:
    """The application: `birefnet serve` passes its config; a Serve config file's `import_path:
    jobs.serve:build_app` passes its `args:` mapping (checked as `ServeConfig`)."""
    config = settings if isinstance(settings, ServeConfig) else build_config(ServeConfig, dict(settings))
    args = config.model_dump(mode="json")
    gpus = config.gpus_per_replica
    if gpus is None:
        gpus = 1.0 if config.device != "cpu" and _cluster_has_gpus() else 0.0
    scaling: dict[str, Any] = (
        {"autoscaling_config": config.autoscaling}
        if config.autoscaling
        else {"num_replicas": config.replicas}
    )
    model = SegmentModel.options(  # type: ignore[attr-defined]  # @serve.deployment makes it a Deployment
        ray_actor_options={"num_cpus": config.cpus_per_replica, "num_gpus": gpus},
        max_ongoing_requests=config.max_ongoing_requests,
        max_queued_requests=config.max_queued_requests,
        **scaling,
    ).bind(args)
    return SegmentIngress.options(  # type: ignore[attr-defined]  # @serve.deployment makes it a Deployment
        num_replicas=config.ingress_replicas,
        ray_actor_options={"num_cpus": config.cpus_per_ingress},
        max_ongoing_requests=config.max_ongoing_requests,
        max_queued_requests=config.max_queued_requests,
    ).bind(model, args)
