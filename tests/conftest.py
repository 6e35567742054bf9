"""Registers the fixtures of ``tests/support`` for every test."""

pytest_plugins = [
    "tests.support.seaweedfs",
    "tests.support.embedded_ray",
    "tests.support.devices",
    "tests.support.onnx_models",
]
