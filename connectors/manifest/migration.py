"""Columns renamed since manifests were first written, and how old parts are read under the new names.

Parts are immutable and an incremental run reads every part ever written, so a rename cannot
rewrite history: ``reading`` finds each file's columns through ``file_columns`` (the one place
every reader, the done index and compaction go through), and compaction then writes the rows
under the current names, so old parts disappear with the next compaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

#: Old column name -> current name. ``weights`` held the SHA-256 of the weights file (or
#: ``random``) under a name that read like the weights themselves.
RENAMED_COLUMNS: Mapping[str, str] = {"weights": "weights_sha256"}


def file_columns(names: Sequence[str]) -> dict[str, str]:
    """Each column a reader sees -> the column of a file with columns ``names`` that holds it.

    Renamed columns are found under their old name; a file that holds both an old name and its
    current one keeps the current column, and the old one is left unread.
    """
    present = set(names)
    return {
        RENAMED_COLUMNS.get(name, name): name
        for name in names
        if name not in RENAMED_COLUMNS or RENAMED_COLUMNS[name] not in present
    }
