"""The documentation site builds with `mkdocs build --strict` (broken links and missing pages fail),
and its reference pages, generated from the code, cover every option, manifest column and route."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.manifest.schema import MANIFEST_SCHEMA
from jobs.common.cli import COMMANDS, load_command, options_of

ROOT = Path(__file__).resolve().parents[2]
QUIET = {"NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, env={**os.environ, **QUIET}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def _text(site: Path, page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", (site / page / "index.html").read_text()))


def test_every_option_of_every_command_is_documented(site: Path) -> None:
    page = _text(site, "reference/options")
    for name in COMMANDS:
        assert f"birefnet {name}" in page
        for option in options_of(load_command(name).config):
            shown = option.spellings[-1] if option.spellings else option.name
            assert shown in page, f"{name}: {shown} is missing from the options reference"


def test_every_manifest_column_is_documented(site: Path) -> None:
    page = _text(site, "reference/manifest")
    missing = [field.name for field in MANIFEST_SCHEMA if f" {field.name} " not in page]
    assert not missing


def test_the_http_reference_follows_the_services_openapi(site: Path) -> None:
    page = _text(site, "reference/http-api")
    for route in ("GET /", "GET /healthz", "POST /v1/segment"):
        assert route in page
    for parameter in ("output", "box", "refine_foreground", "background", "format"):
        assert f" {parameter} " in page
    assert (site / "reference" / "openapi.json").is_file()
