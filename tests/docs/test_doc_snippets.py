"""The code in the README and the docs runs as written (Sybil parses the Markdown).

- ```python blocks are executed in page order, one namespace per page, in a temporary folder:
  a block that cannot run here says why in a `<!-- skip: next "reason" -->` directive.
- ```bash lines that run a command (`birefnet NAME ...`, `python -m jobs.NAME ...`, also after
  `ray job submit ... --`) are parsed by that command's own option parser: every documented flag
  and value must be accepted. Nothing is run; `--config` files are read from the repository.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from unittest import SkipTest

import pytest
from sybil import Example, Sybil
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser

from jobs.common.cli import COMMANDS, load_command, parse_config

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
_SKIP_WITHOUT_REASON = re.compile(r"<!--\s*skip:\s*next\s*-->")


def command_lines(block: str) -> list[list[str]]:
    """The command invocations in a shell block, as argument lists starting at the command's name."""
    found = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if "--" in words and words[:3] == ["ray", "job", "submit"]:
            words = words[words.index("--") + 1 :]
        if words[:1] == ["birefnet"] and len(words) > 1:
            found.append(words[1:])
        elif words[:2] == ["python", "-m"] and len(words) > 2 and words[2].startswith("jobs."):
            name = words[2].removeprefix("jobs.")
            found.append([name, *words[3:]])
    return found


def check_command_lines(example: Example) -> None:
    for argv in command_lines(example.parsed):
        name, *options = argv
        assert name in COMMANDS, f"{example.path}:{example.line}: no command {name!r}"
        if "--help" in options or "-h" in options:
            continue
        if "--config" in options:  # a repository file, whatever the working folder
            at = options.index("--config") + 1
            options[at] = str(ROOT / options[at])
        parse_config(load_command(name).config, options, prog=f"birefnet {name}")


SYBIL = Sybil(
    parsers=[
        PythonCodeBlockParser(),
        CodeBlockParser(language="bash", evaluator=check_command_lines),
        SkipParser(),
    ]
)


def test_the_pages_exist() -> None:
    assert (ROOT / "docs" / "index.md") in PAGES
    assert len(PAGES) > 5, PAGES


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_code_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not _SKIP_WITHOUT_REASON.search(page.read_text()), f"{page}: a skip directive must say why"
    document = SYBIL.parse(page)
    monkeypatch.chdir(tmp_path)
    ran = skipped = 0
    for example in document:
        try:
            example.evaluate()
        except SkipTest:
            skipped += 1
            continue
        ran += 1
    assert ran or not skipped, f"{page}: every example was skipped"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("birefnet segment --input a --output b", [["segment", "--input", "a", "--output", "b"]]),
        (
            "ray job submit --working-dir . -- python -m jobs.segment --config c.yaml",
            [["segment", "--config", "c.yaml"]],
        ),
        (
            "birefnet predict photo.jpg \\\n  -o mask.png  # a comment",
            [["predict", "photo.jpg", "-o", "mask.png"]],
        ),
        ("make demo\npip install -e .", []),
    ],
)
def test_command_lines_are_found(line: str, expected: list[list[str]]) -> None:
    assert command_lines(line) == expected


def test_a_wrong_flag_in_a_shell_block_fails(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```bash\nbirefnet segment --input a --output b --no-such-flag 1\n```\n")
    with pytest.raises(Exception, match="no-such-flag"):
        for example in SYBIL.parse(page):
            example.evaluate()


def test_a_failing_python_block_fails(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```python\nx = 1\n```\n\n```python\nassert x == 2, 'x is not 2'\n```\n")
    with pytest.raises(AssertionError, match="x is not 2"):
        for example in SYBIL.parse(page):
            example.evaluate()
