"""What the online service runs: the model (as the job takes it), its replicas, and the HTTP limits.

One validated model for `birefnet serve` flags, `--config` files, and the `args:` of a Ray Serve
config file (`serve run` / `serve deploy`), so every way of starting the service checks the same.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from birefnet_core.box_guidance import DEFAULT_BOX_MARGIN

from ..common.options import ModelOptions, RayOptions, StorageOptions

__all__ = ["ServeConfig"]


class ServeConfig(ModelOptions, StorageOptions, RayOptions):
    """The BiRefNet service: model replicas that batch requests, behind HTTP ingress replicas."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address the HTTP proxy listens on (0.0.0.0 for all).")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    route_prefix: str = Field("/", description="URL prefix of the application.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where replicas run the model; auto = cuda when a replica has a GPU, else cpu."
    )
    cpu_threads: int | None = Field(
        None, ge=1, description="Torch threads of a CPU model replica; default: its node's cores."
    )
    max_batch_size: int = Field(8, ge=1, le=256, description="Most requests one model call batches together.")
    batch_wait_timeout_s: float = Field(
        0.01, ge=0, le=10, description="How long a model replica waits to fill a batch."
    )
    replicas: int = Field(1, ge=1, description="Model replicas (when not autoscaling).")
    gpus_per_replica: float | None = Field(
        None,
        ge=0,
        description="GPUs per model replica (fractions share one); default 1 if the cluster has GPUs.",
    )
    cpus_per_replica: float = Field(1.0, ge=0, description="CPUs reserved per model replica.")
    min_replicas: int | None = Field(
        None, ge=0, description="Autoscale model replicas from this many (set with --max-replicas)."
    )
    max_replicas: int | None = Field(None, ge=1, description="Autoscale model replicas up to this many.")
    target_ongoing_requests: float = Field(
        8.0, gt=0, description="Autoscaling target: requests in flight per model replica."
    )
    ingress_replicas: int = Field(
        1, ge=1, description="HTTP replicas that decode, encode and route requests."
    )
    cpus_per_ingress: float = Field(1.0, ge=0, description="CPUs reserved per HTTP replica.")
    max_ongoing_requests: int = Field(
        64, ge=1, description="Requests a replica takes at once before Serve queues them."
    )
    max_queued_requests: int = Field(
        -1,
        ge=-1,
        description="Requests Serve queues before answering 503 (load shedding); -1 = no limit.",
    )
    max_body_bytes: int = Field(
        50 * 2**20, ge=1024, description="Largest request body accepted (HTTP 413 above it)."
    )
    max_image_pixels: int = Field(
        100_000_000, ge=1, description="Largest image accepted in pixels (HTTP 413 above it: bombs)."
    )
    box_margin: float = Field(
        DEFAULT_BOX_MARGIN,
        ge=0,
        le=4,
        description="Context the network sees around a guiding box, as a fraction of its size per side.",
    )

    @model_validator(mode="after")
    def _replica_options(self) -> ServeConfig:
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ValueError("--min-replicas and --max-replicas go together (autoscaling bounds)")
        if (
            self.max_replicas is not None
            and self.min_replicas is not None
            and self.min_replicas > self.max_replicas
        ):
            raise ValueError(f"--min-replicas {self.min_replicas} exceeds --max-replicas {self.max_replicas}")
        if self.device == "cpu" and self.gpus_per_replica:
            raise ValueError(
                f"--device cpu with --gpus-per-replica {self.gpus_per_replica:g} reserves unused GPUs"
            )
        if self.backend == "tensorrt" and self.device == "cpu":
            raise ValueError("--backend tensorrt needs a CUDA device, not --device cpu")
        if not self.route_prefix.startswith("/"):
            raise ValueError(f"--route-prefix must start with '/', got {self.route_prefix!r}")
        return self

    @property
    def autoscaling(self) -> dict[str, float] | None:
        """Ray Serve's autoscaling_config, when bounds are set."""
        if self.max_replicas is None:
            return None
        return {
            "min_replicas": self.min_replicas or 0,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
        }
