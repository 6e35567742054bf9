"""The bundled demo model exported to ONNX once per test session, through `birefnet export`.

An export traces the whole network (about a minute and a half on 2 cores), so every test that
needs a file (runtime, job, rembg) shares this one; it is read-only for them, and marked `slow`
(the quick loop, `-m "not slow"`, never pays for the export).
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "demo_onnx" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def demo_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the demo variant's dynamic float32 export (opset 18)."""
    from jobs.export import main as export_main

    path = tmp_path_factory.mktemp("onnx") / "birefnet-demo.onnx"
    assert export_main(["--variant", "demo", "--output", str(path)]) == 0
    path.chmod(0o444)
    return path
