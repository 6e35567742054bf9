"""Registry of the officially released BiRefNet checkpoints, as data.

Every stage of a run (preprocessing, inference, manifest) reads the working size and
normalisation from the one `Variant` attached to the loaded model, so they cannot disagree.
Repository and file names are as published upstream; correcting one is a one-line change here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .size import Size

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "VARIANTS", "Variant", "get_variant"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GITHUB_RELEASE = "https://github.com/ZhengPeng7/BiRefNet/releases/download/v1"


@dataclass(frozen=True)
class Variant:
    """One released checkpoint: which network it needs and how its inputs must look."""

    name: str
    backbone: str
    #: (height, width) the model was trained at; None means "native size rounded to /32".
    size: Size | None
    hf_repo: str
    release_file: str
    hf_file: str = "model.safetensors"
    revision: str | None = None
    sha256: str | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    #: A weights file shipped inside this package (``birefnet_core/pretrained/``) instead of a download.
    bundled_file: str | None = None
    #: What the weights are, in one sentence, when they are not an upstream release.
    card: str | None = None

    @property
    def release_url(self) -> str:
        return f"{GITHUB_RELEASE}/{self.release_file}"

    @property
    def is_dynamic(self) -> bool:
        return self.size is None


def _v(name: str, backbone: str, size: Size | None, repo: str, release: str) -> Variant:
    return Variant(name=name, backbone=backbone, size=size, hf_repo=repo, release_file=release)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        _v("general", "swin_v1_l", Size(1024, 1024), "ZhengPeng7/BiRefNet", "BiRefNet-general-epoch_244.pth"),
        _v(
            "lite",
            "swin_v1_t",
            Size(1024, 1024),
            "ZhengPeng7/BiRefNet_lite",
            "BiRefNet-general-bb_swin_v1_tiny-epoch_232.pth",
        ),
        _v(
            "lite-2k",
            "swin_v1_t",
            Size(height=1440, width=2560),
            "ZhengPeng7/BiRefNet_lite-2K",
            "BiRefNet_lite-general-2K-epoch_232.pth",
        ),
        _v(
            "hr", "swin_v1_l", Size(2048, 2048), "ZhengPeng7/BiRefNet_HR", "BiRefNet_HR-general-epoch_130.pth"
        ),
        _v(
            "hr-matting",
            "swin_v1_l",
            Size(2048, 2048),
            "ZhengPeng7/BiRefNet_HR-matting",
            "BiRefNet_HR-matting-epoch_135.pth",
        ),
        _v(
            "dynamic",
            "swin_v1_l",
            None,
            "ZhengPeng7/BiRefNet_dynamic",
            "BiRefNet_dynamic-general-epoch_174.pth",
        ),
        _v(
            "matting",
            "swin_v1_l",
            Size(1024, 1024),
            "ZhengPeng7/BiRefNet-matting",
            "BiRefNet-matting-epoch_100.pth",
        ),
        _v(
            "portrait",
            "swin_v1_l",
            Size(1024, 1024),
            "ZhengPeng7/BiRefNet-portrait",
            "BiRefNet-portrait-epoch_150.pth",
        ),
        _v("dis", "swin_v1_l", Size(1024, 1024), "ZhengPeng7/BiRefNet-DIS5K", "BiRefNet-DIS-epoch_590.pth"),
        _v("cod", "swin_v1_l", Size(1024, 1024), "ZhengPeng7/BiRefNet-COD", "BiRefNet-COD-epoch_125.pth"),
        _v(
            "hrsod",
            "swin_v1_l",
            Size(1024, 1024),
            "ZhengPeng7/BiRefNet-HRSOD",
            "BiRefNet-HRSOD_DHU-epoch_115.pth",
        ),
        Variant(
            name="demo",
            backbone="swin_v1_demo",
            size=Size(256, 256),
            hf_repo="",
            release_file="",
            bundled_file="birefnet-demo.safetensors",
            card="A demonstration model, not a BiRefNet release: a narrow BiRefNet (4.4M parameters) "
            "trained with `birefnet train` on generated scenes only (see birefnet_core/pretrained/README.md). "
            "It makes the offline demo and tests meaningful; do not use it on real photographs.",
        ),
        _v(
            "massive",
            "swin_v1_l",
            Size(1024, 1024),
            "ZhengPeng7/BiRefNet-DIS5K-TR_TEs",
            "BiRefNet-massive-TR_DIS5K_TR_TEs-epoch_420.pth",
        ),
    )
}


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(f"unknown BiRefNet variant {name!r}; choose one of {sorted(VARIANTS)}") from None
