"""The two set-up commands on a fresh machine: what `make demo` and `make test` would install."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _dry_run(target: str, tmp_path: Path) -> list[str]:
    """The commands `make -n target` would run in a fresh clone (no .venv yet)."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    done = subprocess.run(
        ["make", "-n", target, "PYTHON=python3"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_make_demo_installs_the_package_and_the_hub_client_only(tmp_path: Path) -> None:
    installs = [
        line for line in _dry_run("demo", tmp_path) if "pip install" in line and "--upgrade pip" not in line
    ]
    assert installs == [".venv/bin/pip install --quiet -e '.[hf]'"]


def test_make_test_installs_every_extra_the_tests_need(tmp_path: Path) -> None:
    installs = [
        line for line in _dry_run("lint", tmp_path) if "pip install" in line and "--upgrade pip" not in line
    ]
    assert installs == [".venv/bin/pip install --quiet -e '.[dev,geo,hf]'"]
