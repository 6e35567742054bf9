"""URI spelling shared by every connector: schemes, joining, and output keys that cannot escape their root.

Pure string handling with no filesystem behind it, so layouts and listings can build URIs without
touching a store.
"""

from __future__ import annotations

import posixpath

LOCAL_SCHEMES = frozenset({"", "file", "local"})
MEMORY_SCHEMES = frozenset({"memory"})
S3_SCHEMES = frozenset({"s3", "s3a"})
SUPPORTED_SCHEMES = LOCAL_SCHEMES | MEMORY_SCHEMES | S3_SCHEMES


def uri_scheme(uri: str) -> str:
    """Lower-case scheme of ``uri``, or "" for plain local paths."""
    scheme, sep, _ = uri.partition("://")
    return scheme.lower() if sep else ""


def join_uri(root: str, relative: str) -> str:
    """Join a trusted relative path (e.g. from ``list_files``) onto ``root`` with one "/".

    Use ``safe_output_uri`` for anything that decides where outputs are written.
    """
    if root.endswith("://"):
        return root + relative
    return f"{root.rstrip('/')}/{relative}"


def safe_output_uri(root: str, relative: str) -> str:
    """Join ``relative`` onto the output ``root``, refusing keys that could land outside it.

    Output keys derive from input names, which are not trusted: an absolute path, a backslash
    path or enough ``..`` segments would otherwise overwrite arbitrary files or objects.
    Harmless ``.``/``..`` segments are normalised so local and S3 outputs get the same key.
    """
    if not relative or not relative.strip():
        raise ValueError(f"Output path under {root!r} is empty.")
    if "\x00" in relative:
        raise ValueError(f"Output path {relative!r} contains a NUL byte.")
    if "\\" in relative:
        raise ValueError(f"Output path {relative!r} contains a backslash; use '/' separators.")
    if relative.startswith("/") or "://" in relative:
        raise ValueError(f"Output path {relative!r} is absolute; it must be relative to {root!r}.")
    normalised = posixpath.normpath(relative)
    if normalised == ".." or normalised.startswith("../"):
        raise ValueError(f"Output path {relative!r} escapes the output root {root!r}.")
    if normalised == ".":
        raise ValueError(f"Output path {relative!r} under {root!r} names the root itself, not a file.")
    return join_uri(root, normalised)
