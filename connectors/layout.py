"""The output layout: where every file of a run goes under the output root, and nowhere else.

    masks/<name>.png        8-bit mask of an image (<name>.tif for a scene: a COG)
    cutouts/<name>.png      RGBA cut-out
    manifest/               the Parquet manifest (see connectors.manifest)
    runs/<run_id>/config.json, summary.json
    staging/<settings>/<scene>/   a scene's staged chunks until its row is committed
                            (see connectors.staging: kept across runs for reuse)

``<name>`` is the input's relative path without its extension (``a/b.jpg`` -> ``a/b``), so
outputs mirror the inputs. Collision rule: when inputs of one folder (or one tar shard, or one
block of a list) share a path without extension (``b.jpg`` and ``b.png``), every one of them
keeps its extension instead (``a/b.jpg`` -> ``masks/a/b.jpg.png``, ``a/b.png`` ->
``masks/a/b.png.png``), so both outputs survive. If that name is taken too (an input literally
named ``b.jpg.png``), the input that sorts later gets no name and becomes an ``error`` row.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

from connectors.uris import join_uri, safe_output_uri

__all__ = [
    "MANIFEST_DIR",
    "STAGING_DIR",
    "OutputLayout",
    "RunFiles",
    "collision_message",
    "output_names",
    "plain_name",
]

MANIFEST_DIR = "manifest"
STAGING_DIR = "staging"
MASK_SUFFIX = ".png"
SCENE_SUFFIX = ".tif"
CUTOUT_SUFFIX = ".png"


def plain_name(relative_path: str) -> str:
    """The output name of an input without rivals: its relative path without the extension."""
    root, _ = posixpath.splitext(relative_path)
    return root or relative_path


def output_names(relative_paths: Sequence[str]) -> list[str | None]:
    """The output name of each input (see the module docstring); None where the rule gives none.

    Decided over a group of inputs that contains every possible rival (a folder, a shard, a
    block of a list), so it is the same wherever and whenever the group is listed.
    """
    by_stem: dict[str, list[int]] = {}
    for i, path in enumerate(relative_paths):
        by_stem.setdefault(plain_name(path), []).append(i)
    names: list[str | None] = [None] * len(relative_paths)
    for stem, members in by_stem.items():
        if len(members) == 1:
            names[members[0]] = stem
        else:
            for i in members:
                names[i] = relative_paths[i]
    # A kept extension can equal another input's plain name: the later input loses it.
    owner: dict[str, int] = {}
    for i in sorted(range(len(names)), key=lambda i: relative_paths[i]):
        name = names[i]
        if name is None:
            continue
        if name in owner:
            names[i] = None
        else:
            owner[name] = i
    return names


def collision_message(relative_path: str) -> str:
    """Why an input got no output name (the rest of an error row's message)."""
    return (
        f"its output name {relative_path!r} is taken by another input of the same folder or shard "
        "(see the collision rule in the README); rename one of them"
    )


@dataclass(frozen=True)
class RunFiles:
    """Files of one run under ``runs/<run_id>/``."""

    root: str

    @property
    def config(self) -> str:
        return join_uri(self.root, "config.json")

    @property
    def summary(self) -> str:
        return join_uri(self.root, "summary.json")


@dataclass(frozen=True)
class OutputLayout:
    """Absolute URIs of every output under ``root`` (a local absolute path or a URI)."""

    root: str

    def mask(self, name: str) -> str:
        return safe_output_uri(self.root, f"masks/{name}{MASK_SUFFIX}")

    def scene_mask(self, name: str) -> str:
        return safe_output_uri(self.root, f"masks/{name}{SCENE_SUFFIX}")

    def cutout(self, name: str) -> str:
        return safe_output_uri(self.root, f"cutouts/{name}{CUTOUT_SUFFIX}")

    @property
    def manifest(self) -> str:
        return join_uri(self.root, MANIFEST_DIR)

    @property
    def staging(self) -> str:
        """Where scene chunks wait for their scene's commit, across runs (``connectors.staging``)."""
        return join_uri(self.root, STAGING_DIR)

    def run(self, run_id: str) -> RunFiles:
        return RunFiles(safe_output_uri(self.root, f"runs/{run_id}"))
