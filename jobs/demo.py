"""`make demo`: segment a generated sample folder on this machine and show where the masks are.

Weights: `--weights` if given, else the `lite` release from the local Hugging Face cache, else
seeded random weights with a loud warning (the pipeline still runs end to end).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from tqdm import tqdm

from birefnet_core import get_variant, load_model
from birefnet_core.postprocessing import probabilities_to_uint8
from birefnet_core.predictor import Predictor
from birefnet_core.weights import RANDOM_WEIGHTS, cached_variant_file
from connectors.images import decode_image, encode_png
from connectors.storage import open_input, read_bytes, write_bytes_atomic
from connectors.synthetic import encode_image, object_scene

log = logging.getLogger("jobs.demo")
SAMPLE_SIZES = ((640, 480), (480, 640), (800, 600), (512, 512))


def make_samples(folder: Path) -> list[Path]:
    """Write a few generated product photos (JPEG) into `folder`; returns their paths."""
    paths = []
    for i, (w, h) in enumerate(SAMPLE_SIZES):
        path = folder / f"product_{i:02d}.jpg"
        if not path.exists():
            write_bytes_atomic(str(path), encode_image(object_scene(w, h, seed=i)))
        paths.append(path)
    return paths


def choose_weights(requested: str | None) -> tuple[str, str | None]:
    if requested:
        return requested, None
    lite = get_variant("lite")
    cached = cached_variant_file(lite)
    if cached:
        return cached, "lite"
    log.warning("=" * 72)
    log.warning("No --weights and no cached 'lite' release: running with RANDOM weights.")
    log.warning(
        "The masks will be meaningless. Fetch weights with `huggingface-cli download %s`", lite.hf_repo
    )
    log.warning("or pass --weights PATH_OR_URI.")
    log.warning("=" * 72)
    return RANDOM_WEIGHTS, "lite"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=Path("demo_input"))
    parser.add_argument("--output", type=Path, default=Path("demo_output"))
    parser.add_argument("--weights", help="variant name, path or URI (default: cached 'lite', else random)")
    parser.add_argument("--resolution", type=int, default=512, help="working size on CPU (square)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    inputs = make_samples(args.input)
    source, variant = choose_weights(args.weights)
    model = load_model(source, variant=variant, opener=open_input)
    predictor = Predictor(model, resolution=(args.resolution, args.resolution), device=args.device)
    started = time.perf_counter()
    for path in tqdm(inputs, desc="segmenting", unit="image"):
        mask = predictor.predict([decode_image(read_bytes(str(path)), str(path))])[0]
        write_bytes_atomic(
            str(args.output / "masks" / f"{path.stem}.png"), encode_png(probabilities_to_uint8(mask))
        )
    elapsed = time.perf_counter() - started
    print(f"\n{len(inputs)} images segmented in {elapsed:.1f} s with weights {model.weights.source}")
    print(f"inputs: {args.input.resolve()}\nmasks:  {(args.output / 'masks').resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
