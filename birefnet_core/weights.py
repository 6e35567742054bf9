"""Load BiRefNet weights from a variant name, a local file or any URI, and check they fit.

The loader never guesses silently: the backbone is read off the checkpoint's own shapes, a
checkpoint that does not match the requested variant is refused with both backbones named, and
any key mismatch is reported in full (missing, unexpected and mis-shaped keys) before anything
is loaded. Remote URIs are read through an `opener` the caller supplies (the storage layer owns
fsspec), so this module stays free of storage code.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

from .model import BiRefNet, checkpoint_filter_fn, create_model
from .model.swin import SWIN_CONFIGS
from .variants import VARIANTS, Variant, get_variant

__all__ = [
    "RANDOM_WEIGHTS",
    "CheckpointMismatchError",
    "WeightsInfo",
    "WeightsNotFoundError",
    "cached_variant_file",
    "detect_backbone",
    "load_model",
    "load_state_dict",
    "resolve_variant_file",
    "state_dict_bytes",
]

log = logging.getLogger(__name__)

Opener = Callable[[str], IO[bytes]]
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_SAFETENSORS_SUFFIXES = (".safetensors",)
_LISTED_KEYS = 12
#: Weights source that builds a seeded random network: smoke tests and demos only.
RANDOM_WEIGHTS = "random"
#: Weights shipped with the package (variants with a `bundled_file`).
BUNDLED_DIR = Path(__file__).parent / "pretrained"


class WeightsNotFoundError(FileNotFoundError):
    """The weights cannot be found locally and cannot be downloaded."""


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the network it is meant for."""


@dataclass(frozen=True)
class WeightsInfo:
    """Where a model's weights came from, for manifests and logs."""

    source: str
    sha256: str
    backbone: str
    variant: str | None
    file_format: str


def _hf_download(variant: Variant, **kwargs: Any) -> str:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise WeightsNotFoundError(
            f"variant {variant.name!r} is resolved through the Hugging Face cache but huggingface_hub is not "
            "installed (pip install 'birefnet-ray[hf]'); or pass a local path or URI to the weights instead"
        ) from None
    return hf_hub_download(
        repo_id=variant.hf_repo, filename=variant.hf_file, revision=variant.revision, **kwargs
    )


def cached_variant_file(variant: Variant) -> str | None:
    """Path of a released variant's weights if the Hugging Face cache already holds them."""
    try:
        return _hf_download(variant, local_files_only=True)
    except WeightsNotFoundError:
        raise
    except Exception:
        log.debug("%s/%s is not cached", variant.hf_repo, variant.hf_file)
        return None


def resolve_variant_file(variant: Variant) -> str:
    """Path of a variant's weights: shipped in this package, or in the Hugging Face cache
    (downloaded if reachable)."""
    if variant.bundled_file:
        path = BUNDLED_DIR / variant.bundled_file
        if not path.is_file():
            raise WeightsNotFoundError(
                f"the weights shipped for variant {variant.name!r} are missing: {path}"
            )
        return str(path)
    cached = cached_variant_file(variant)
    if cached:
        return cached
    if os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("", "0", "false"):
        reason = "HF_HUB_OFFLINE is set"
    else:
        try:
            return _hf_download(variant, etag_timeout=10)
        except Exception as exc:
            reason = f"downloading it failed ({type(exc).__name__})"
    raise WeightsNotFoundError(
        f"weights for BiRefNet variant {variant.name!r} are not in the Hugging Face cache and {reason}: "
        f"download {variant.hf_repo}/{variant.hf_file} (or {variant.release_url}) on a connected machine and "
        "pass its local path or URI as the weights source, or fill the cache with "
        f"`huggingface-cli download {variant.hf_repo}`."
    )


def _read_source(source: str, opener: Opener | None) -> bytes:
    if _URI.match(source) and not source.startswith("file://"):
        if opener is None:
            raise ValueError(
                f"{source!r} is a remote URI; pass opener= (for example connectors.storage.open_input) "
                "so the storage layer can read it"
            )
        with opener(source) as handle:
            return handle.read()
    path = Path(source.removeprefix("file://")).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {source!r} does not exist")
    return path.read_bytes()


def _parse_checkpoint(data: bytes, source: str) -> tuple[dict[str, torch.Tensor], str]:
    looks_safetensors = source.lower().endswith(_SAFETENSORS_SUFFIXES) or data[8:9] == b"{"
    if looks_safetensors:
        from safetensors.torch import load as load_safetensors

        try:
            return load_safetensors(data), "safetensors"
        except Exception as exc:
            if source.lower().endswith(_SAFETENSORS_SUFFIXES):
                raise CheckpointMismatchError(f"{source!r} is not a valid safetensors file: {exc}") from exc
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointMismatchError(
            f"{source!r} is neither a safetensors file nor a PyTorch state dict: {exc}"
        ) from exc
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointMismatchError(f"{source!r} does not hold a state dict of tensors")
    return obj, "pth"


def detect_backbone(state_dict: dict[str, torch.Tensor]) -> str | None:
    """Backbone of a BiRefNet checkpoint, read from its embedding width and stage-3 depth."""
    embed = state_dict.get("bb.patch_embed.proj.weight")
    if embed is None:
        return None
    block = re.compile(r"^bb\.layers\.2\.blocks\.(\d+)\.")
    depth = 1 + max((int(m.group(1)) for k in state_dict if (m := block.match(k))), default=-1)
    for name, cfg in SWIN_CONFIGS.items():
        if cfg.embed_dim == embed.shape[0] and cfg.depths[2] == depth:
            return name
    return None


def _describe(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LISTED_KEYS])
    return shown + (f" ... (+{len(keys) - _LISTED_KEYS} more)" if len(keys) > _LISTED_KEYS else "")


def _check_keys(model: BiRefNet, state_dict: dict[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or misshaped:
        parts = [
            f"{label} ({len(keys)}): {_describe(keys)}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
            if keys
        ]
        raise CheckpointMismatchError(
            f"checkpoint {source!r} does not fit BiRefNet/{model.backbone_name}; " + "; ".join(parts)
        )


def load_state_dict(
    source: str, *, opener: Opener | None = None, sha256: str | None = None
) -> tuple[dict[str, torch.Tensor], WeightsInfo]:
    """Read a checkpoint (no model built) and describe it; verifies `sha256` when given."""
    variant = VARIANTS.get(source)
    location = resolve_variant_file(variant) if variant else source
    data = _read_source(location, opener)
    digest = hashlib.sha256(data).hexdigest()
    expected_digest = sha256 or (variant.sha256 if variant else None)
    if expected_digest and digest != expected_digest.lower():
        raise CheckpointMismatchError(f"{location!r} has sha256 {digest}, expected {expected_digest}")
    state_dict, file_format = _parse_checkpoint(data, location)
    state_dict = checkpoint_filter_fn(state_dict)
    backbone = detect_backbone(state_dict) or "unknown"
    info = WeightsInfo(location, digest, backbone, variant.name if variant else None, file_format)
    return state_dict, info


def state_dict_bytes(
    state_dict: dict[str, torch.Tensor],
    dtype: torch.dtype = torch.float32,
    metadata: dict[str, str] | None = None,
) -> bytes:
    """A BiRefNet state dict as a safetensors file with the released key names, loadable by `load_model`.

    Wrappers (DDP's ``module.``, torch.compile's ``_orig_mod.``) are stripped; floating tensors are
    cast to `dtype` (the releases on Hugging Face store float16), integer buffers kept.
    """
    from safetensors.torch import save

    state = checkpoint_filter_fn(state_dict)
    tensors = {
        k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous() for k, v in state.items()
    }
    return save(tensors, metadata=metadata)


def _random_model(variant: Variant | None, device: str | torch.device, dtype: torch.dtype) -> BiRefNet:
    backbone = variant.backbone if variant else "swin_v1_t"
    log.warning("using RANDOM BiRefNet/%s weights: masks are meaningless (smoke tests only)", backbone)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model(backbone)
    model.variant = variant
    model.weights = WeightsInfo(
        RANDOM_WEIGHTS, RANDOM_WEIGHTS, backbone, variant.name if variant else None, "random"
    )
    return model.to(device=device, dtype=dtype).eval()


def load_model(
    variant_or_source: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    variant: str | None = None,
    opener: Opener | None = None,
    sha256: str | None = None,
) -> BiRefNet:
    """Build BiRefNet and load weights into it, strictly.

    `variant_or_source` is a variant name (see `VARIANTS`), a local path, a URI (read with
    `opener`) or "random" (seeded random weights, for smoke tests). `variant` names the release a file belongs to, so its working size travels with the
    model and its backbone is checked against the file. `dtype` is the parameter dtype; keep float32 and
    let the Predictor convert it (bfloat16) or autocast (float16). The returned model carries `.variant`
    (a `Variant` or None) and `.weights` (a `WeightsInfo`).
    """
    requested = (
        get_variant(variant or variant_or_source) if (variant or variant_or_source in VARIANTS) else None
    )
    if variant_or_source == RANDOM_WEIGHTS:
        return _random_model(requested, device, dtype)
    state_dict, info = load_state_dict(variant_or_source, opener=opener, sha256=sha256)
    backbone = info.backbone
    if requested is not None and backbone not in ("unknown", requested.backbone):
        raise CheckpointMismatchError(
            f"checkpoint {info.source!r} holds a {backbone} BiRefNet, but variant {requested.name!r} "
            f"uses {requested.backbone}; pass the matching variant or weights"
        )
    if backbone == "unknown":
        backbone = requested.backbone if requested else "swin_v1_l"
        log.warning("could not tell the backbone of %s from its shapes; trying %s", info.source, backbone)
    model = create_model(backbone)
    _check_keys(model, state_dict, info.source)
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()}, strict=True)
    model.variant = requested
    model.weights = WeightsInfo(
        info.source, info.sha256, backbone, requested.name if requested else None, info.file_format
    )
    log.info("loaded BiRefNet/%s from %s (sha256 %s)", backbone, info.source, info.sha256[:12])
    return model.to(device=device, dtype=dtype).eval()
