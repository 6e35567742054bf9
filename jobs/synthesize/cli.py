"""`birefnet synthesize`: a generated DIS5K-style set (``im/*.jpg`` + ``gt/*.png``) for training and tests.

Image ``i`` of a set is drawn from ``SeedSequence([seed, i])``, so sets with different seeds never
share an image and any image can be remade alone. Sizes vary within ``min_side..max_side``.
"""

from __future__ import annotations

import logging

import numpy as np
from pydantic import ConfigDict, Field, model_validator
from tqdm import tqdm

from connectors.images import encode_mask_png
from connectors.storage import join_uri, write_bytes_atomic
from connectors.synthetic import encode_image, training_scene

from ..common.cli import Command
from ..common.errors import EXIT_OK
from ..common.options import StorageOptions

__all__ = ["COMMAND", "SynthesizeConfig", "main", "scene_seed", "synthesize"]

log = logging.getLogger("jobs.synthesize")


class SynthesizeConfig(StorageOptions):
    """Where the set goes and how it is drawn."""

    model_config = ConfigDict(extra="forbid")

    output: str = Field(..., description="Root of the set (im/ and gt/ are made under it), local or S3.")
    count: int = Field(200, ge=1, description="Number of image/mask pairs.")
    seed: int = Field(0, ge=0, description="Seed of the set; different seeds give disjoint sets.")
    min_side: int = Field(224, ge=32, description="Smallest image side.")
    max_side: int = Field(384, ge=32, description="Largest image side.")

    @model_validator(mode="after")
    def _ordered(self) -> SynthesizeConfig:
        if self.min_side > self.max_side:
            raise ValueError(f"min_side {self.min_side} is larger than max_side {self.max_side}")
        return self


def scene_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def synthesize(config: SynthesizeConfig) -> int:
    for index in tqdm(range(config.count), desc="synthesize", unit="pair"):
        rng = np.random.default_rng(scene_seed(config.seed, index))
        width, height = (int(v) for v in rng.integers(config.min_side, config.max_side + 1, 2))
        image, mask = training_scene(width, height, scene_seed(config.seed, index))
        name = f"scene_{config.seed}_{index:06d}"
        write_bytes_atomic(
            join_uri(config.output, f"im/{name}.jpg"), encode_image(image, quality=92), config.s3
        )
        write_bytes_atomic(join_uri(config.output, f"gt/{name}.png"), encode_mask_png(mask), config.s3)
    print(f"{config.count} pairs under {config.output}")
    return EXIT_OK


COMMAND = Command(
    name="synthesize",
    config=SynthesizeConfig,
    run=synthesize,
)

main = COMMAND.main
