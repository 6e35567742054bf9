"""`make demo` / `birefnet demo`: segment a generated sample archive with an embedded local Ray.

Weights: `--weights` if given, else the `lite` release (from the Hugging Face cache, or downloaded
with a progress bar when the hub is reachable), else the `demo` model shipped in the package (a
small BiRefNet trained on generated scenes, announced as such), else seeded random weights under
a loud banner (the pipeline still runs end to end offline).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from birefnet_core import get_variant
from birefnet_core.weights import RANDOM_WEIGHTS, WeightsNotFoundError, resolve_variant_file
from connectors.storage import write_bytes_atomic
from connectors.synthetic import encode_image, object_scene

from ..common.cli import Command, load_command

__all__ = ["COMMAND", "DemoConfig", "DemoModel", "choose_weights", "demo", "main", "make_samples"]

log = logging.getLogger("jobs.demo")
SAMPLE_SIZES = ((640, 480), (480, 640), (800, 600), (512, 512), (1024, 768), (300, 300))
DEMO_VARIANT = "lite"
OFFLINE_VARIANT = "demo"


class DemoConfig(BaseModel):
    """What the demo reads, writes and runs with."""

    model_config = ConfigDict(extra="forbid")

    input: Path = Field(Path("demo_input"), description="Folder the sample photos are generated into.")
    output: Path = Field(Path("demo_output"), description="Folder for masks, cut-outs and the manifest.")
    weights: str | None = Field(
        None,
        description=f"Variant name, path or URI of the weights; default: the {DEMO_VARIANT!r} release "
        "(cached or downloaded), else random weights.",
    )
    resolution: str = Field(
        "512", description="Working size of the lite release (it was trained at 1024, slow on CPU)."
    )


def make_samples(folder: Path) -> None:
    """A small archive of generated product photos (JPEG), one of them in a sub-folder."""
    for i, (w, h) in enumerate(SAMPLE_SIZES):
        path = folder / ("shelf/" if i % 3 == 2 else "") / f"product_{i:02d}.jpg"
        if not path.exists():
            write_bytes_atomic(str(path), encode_image(object_scene(w, h, seed=i)))


@dataclass(frozen=True)
class DemoModel:
    variant: str
    weights: str
    resolution: str | None  # None: the variant's own working size


def choose_weights(requested: str | None, resolution: str = "512") -> DemoModel:
    """The model the demo runs with: real weights whenever they can be had."""
    if requested:
        return DemoModel(DEMO_VARIANT, requested, resolution)
    variant = get_variant(DEMO_VARIANT)
    try:
        return DemoModel(DEMO_VARIANT, resolve_variant_file(variant), resolution)
    except WeightsNotFoundError as exc:
        reason = str(exc).split(":")[0]
    banner = "=" * 78
    offline = get_variant(OFFLINE_VARIANT)
    try:
        bundled = resolve_variant_file(offline)
    except WeightsNotFoundError:
        bundled = None
    log.warning(banner)
    if bundled:
        log.warning("No --weights, and %s: using the bundled %r model instead.", reason, OFFLINE_VARIANT)
        log.warning("%s", offline.card)
    else:
        log.warning("No --weights, and %s: running with RANDOM weights.", reason)
        log.warning("The masks will be meaningless.")
    log.warning("Real weights: `huggingface-cli download %s`, or pass --weights PATH_OR_URI", variant.hf_repo)
    log.warning("(for example BiRefNet_lite's model.safetensors).")
    log.warning(banner)
    if bundled:
        return DemoModel(OFFLINE_VARIANT, bundled, None)
    return DemoModel(DEMO_VARIANT, RANDOM_WEIGHTS, resolution)


def demo(config: DemoConfig) -> int:
    make_samples(config.input)
    model = choose_weights(config.weights, config.resolution)
    size = ["--resolution", model.resolution] if model.resolution else []
    # Through the command line's registry, as a user would type `birefnet segment ...`: the demo
    # depends on the segment command's documented flags, never on its modules.
    code = load_command("segment").main(
        [
            "--input", str(config.input), "--output", str(config.output), "--variant", model.variant,
            "--weights", model.weights, *size, "--device", "cpu",
            "--outputs", "mask,cutout", "--batch-size", "2", "--no-skip-existing",
        ]
    )  # fmt: skip
    print(f"\ninputs:   {config.input.resolve()}")
    print(f"masks:    {(config.output / 'masks').resolve()}")
    print(f"cut-outs: {(config.output / 'cutouts').resolve()}")
    print(f"manifest: {(config.output / 'manifest').resolve()} (Parquet, one row per input)")
    return code


COMMAND = Command(
    name="demo",
    config=DemoConfig,
    run=demo,
)

main = COMMAND.main
