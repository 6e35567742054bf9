"""`make demo`: run the segmentation job on a generated sample archive with an embedded local Ray.

Weights: `--weights` if given, else the `lite` release from the local Hugging Face cache, else
seeded random weights with a loud warning (the pipeline still runs end to end).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from birefnet_core import get_variant
from birefnet_core.weights import RANDOM_WEIGHTS, cached_variant_file
from connectors.storage import write_bytes_atomic
from connectors.synthetic import encode_image, object_scene

from . import segment

log = logging.getLogger("jobs.demo")
SAMPLE_SIZES = ((640, 480), (480, 640), (800, 600), (512, 512), (1024, 768), (300, 300))


def make_samples(folder: Path) -> None:
    """A small archive of generated product photos (JPEG), one of them in a sub-folder."""
    for i, (w, h) in enumerate(SAMPLE_SIZES):
        path = folder / ("shelf/" if i % 3 == 2 else "") / f"product_{i:02d}.jpg"
        if not path.exists():
            write_bytes_atomic(str(path), encode_image(object_scene(w, h, seed=i)))


def choose_weights(requested: str | None) -> str:
    if requested:
        return requested
    lite = get_variant("lite")
    cached = cached_variant_file(lite)
    if cached:
        return cached
    banner = "=" * 78
    log.warning(banner)
    log.warning("No --weights and no cached 'lite' release: running with RANDOM weights.")
    log.warning(
        "The masks will be meaningless. Get real ones with `huggingface-cli download %s`", lite.hf_repo
    )
    log.warning("or pass --weights PATH_OR_URI (for example BiRefNet_lite's model.safetensors).")
    log.warning(banner)
    return RANDOM_WEIGHTS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=Path("demo_input"))
    parser.add_argument("--output", type=Path, default=Path("demo_output"))
    parser.add_argument("--weights", help="variant name, path or URI (default: cached 'lite', else random)")
    parser.add_argument(
        "--resolution", default="512", help="working size; the release uses 1024 (slow on CPU)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    make_samples(args.input)
    weights = choose_weights(args.weights)
    code = segment.main(
        [
            "--input", str(args.input), "--output", str(args.output), "--variant", "lite",
            "--weights", weights, "--resolution", args.resolution, "--device", "cpu",
            "--outputs", "mask,cutout", "--batch-size", "2", "--no-skip-existing",
        ]
    )  # fmt: skip
    print(f"\ninputs:   {args.input.resolve()}")
    print(f"masks:    {(args.output / 'masks').resolve()}")
    print(f"cut-outs: {(args.output / 'cutouts').resolve()}")
    print(f"manifest: {(args.output / 'manifest').resolve()} (Parquet, one row per input)")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
