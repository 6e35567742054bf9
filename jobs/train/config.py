"""What a training run is asked to do: the validated options, saved with every checkpoint."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from birefnet_core.losses import FINETUNE_LAST_EPOCHS, PIXEL_LOSSES, TASK_LOSS_WEIGHTS, LossWeights, Task
from birefnet_core.model import BACKBONES
from birefnet_core.size import Size
from birefnet_core.variants import VARIANTS
from connectors.training_augment import AUGMENTATIONS, DEFAULT_AUGMENTATIONS

from ..common.options import CommaSeparated, RayOptions, Resolution, StorageOptions, VariantName

__all__ = ["DEFAULT_RESOLUTION", "TrainConfig"]

DEFAULT_RESOLUTION = (1024, 1024)


class TrainConfig(StorageOptions, RayOptions):
    """Everything a fine-tuning or training run needs; a rerun with the same output and name resumes."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(..., description="DIS5K-style training root (im/ and gt/ folders), local or S3.")
    val_data: str | None = Field(
        None,
        description="Validation root in the same layout; default: a held-out share of the training data.",
    )
    val_fraction: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="Share of the training pairs held out for validation when no val data is given.",
    )
    output: str = Field(
        "training", description="Where runs keep checkpoints and the final model (local or S3)."
    )
    name: str = Field("birefnet", description="Run name under the output; rerunning a name resumes it.")
    variant: VariantName | None = Field(
        None, description="Released variant to start from (sets backbone, working size and init weights)."
    )
    backbone: str | None = Field(
        None, description=f"Backbone when no variant is given: one of {', '.join(BACKBONES)}."
    )
    init_weights: str | None = Field(
        None,
        description="'random', a variant name, path or URI; default: the variant's release, else random.",
    )
    resolution: Resolution | None = Field(
        None, description="Training size WxH (multiples of 32); default: the variant's, else 1024."
    )
    batch_size: int = Field(2, ge=1, description="Images per worker per step.")
    grad_accumulation: int = Field(1, ge=1, description="Batches whose gradients make one optimiser step.")
    epochs: int = Field(10, ge=1, description="Passes over the training data.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimiser steps (schedules use it)."
    )
    lr: float | None = Field(
        None,
        gt=0,
        description="AdamW learning rate; default the reference's: 1e-4 (dis) or 1e-5, x sqrt(batch/4).",
    )
    lr_schedule: Literal["constant", "step", "cosine"] = Field("step", description="How the rate changes.")
    lr_decay_epochs: Annotated[list[int], CommaSeparated] = Field(
        default_factory=list,
        description="step schedule: epochs where the rate is multiplied (negative: from the end).",
    )
    lr_decay_rate: float = Field(0.5, gt=0, le=1, description="step schedule: the multiplier.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up of the rate over this many steps.")
    weight_decay: float = Field(1e-2, ge=0, description="AdamW weight decay.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Autocast dtype (fp16 on CUDA only)."
    )
    task: Task = Field("general", description="Loss weights of this task, as the reference.")
    loss_weights: dict[str, float] | None = Field(
        None, description=f"Pixel loss weights instead of the task's ({', '.join(PIXEL_LOSSES)})."
    )
    gradient_loss_weight: float = Field(1.0, ge=0, description="Weight of the gradient-reference loss.")
    finetune_last_epochs: int | None = Field(
        None,
        ge=0,
        description="Final epochs with the boundary-loss weights; default: the task's, 0 turns it off.",
    )
    augmentations: Annotated[list[str], CommaSeparated] = Field(
        default_factory=lambda: list(DEFAULT_AUGMENTATIONS), description=f"Of {', '.join(AUGMENTATIONS)}."
    )
    num_workers: int = Field(1, ge=1, description="Ray Train workers (DDP processes).")
    use_gpu: bool = Field(False, description="One GPU per worker (NCCL); else CPU workers (gloo).")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per training worker.")
    seed: int = Field(7, description="Seed of the model's random init, the split and the data order.")
    checkpoint_every_steps: int | None = Field(
        None, ge=1, description="Also checkpoint every N steps (always at each epoch's end)."
    )
    keep_checkpoints: int = Field(3, ge=1, description="Checkpoints kept in the run folder (newest).")
    log_every_steps: int = Field(20, ge=1, description="Training loss lines per this many steps.")
    export_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", description="dtype of the final model.safetensors."
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs for an embedded local Ray (default: all).")
    object_store_memory: int | None = Field(
        None, ge=75 * 1024**2, description="Object store bytes for an embedded local Ray."
    )

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str | None) -> str | None:
        if value is not None and value not in BACKBONES:
            raise ValueError(f"unknown backbone {value!r}; choose one of {list(BACKBONES)}")
        return value

    @field_validator("augmentations")
    @classmethod
    def _known_augmentations(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(AUGMENTATIONS))
        if unknown:
            raise ValueError(f"unknown augmentations {unknown}; choose from {list(AUGMENTATIONS)}")
        return value

    @field_validator("loss_weights", mode="before")
    @classmethod
    def _parse_weights(cls, value: object) -> object:
        """`bce=30,iou=0.5` on the command line; a mapping in config files."""
        if isinstance(value, str):
            try:
                return {
                    k.strip(): float(v)
                    for k, v in (item.split("=") for item in value.split(",") if item.strip())
                }
            except ValueError:
                raise ValueError(f"expected NAME=WEIGHT,..., got {value!r}") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.variant and self.backbone and self.backbone != VARIANTS[self.variant].backbone:
            raise ValueError(
                f"variant {self.variant!r} uses {VARIANTS[self.variant].backbone}, not {self.backbone}; give one of them"
            )
        if self.precision == "fp16" and not self.use_gpu:
            raise ValueError("fp16 training needs use_gpu (CPUs autocast to bf16: use precision bf16)")
        if self.loss_weights is not None:
            LossWeights(self.loss_weights)  # names checked here, not in the first worker
        return self

    @property
    def model_backbone(self) -> str:
        if self.variant:
            return VARIANTS[self.variant].backbone
        return self.backbone or "swin_v1_l"

    @property
    def initial_weights(self) -> str:
        return self.init_weights or self.variant or "random"

    @property
    def size(self) -> Size:
        """(height, width) of training batches."""
        variant_size = VARIANTS[self.variant].size if self.variant else None
        width, height = self.resolution or (
            (variant_size.width, variant_size.height) if variant_size else DEFAULT_RESOLUTION
        )
        return Size(height=height, width=width)

    def global_batch(self) -> int:
        return self.batch_size * self.num_workers * self.grad_accumulation

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return (1e-4 if self.task == "dis" else 1e-5) * math.sqrt(self.global_batch() / 4)

    @property
    def weights(self) -> LossWeights:
        pixel = self.loss_weights if self.loss_weights is not None else TASK_LOSS_WEIGHTS[self.task].pixel
        return LossWeights(dict(pixel), gradient=self.gradient_loss_weight)

    @property
    def finetune_epochs(self) -> int:
        wanted = (
            FINETUNE_LAST_EPOCHS[self.task]
            if self.finetune_last_epochs is None
            else self.finetune_last_epochs
        )
        return min(wanted, self.epochs // 2)  # never more than half of a short run
