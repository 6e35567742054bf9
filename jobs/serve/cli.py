"""`birefnet serve` / `python -m jobs.serve`: start the service and keep it up until Ctrl-C."""

from __future__ import annotations

import logging
import threading

from ray import serve

from ..common.cli import Command
from ..common.errors import EXIT_OK
from ..common.ray_startup import start_ray
from .config import ServeConfig
from .deployments import build_app

__all__ = ["APP_NAME", "COMMAND", "main", "serve_forever", "start_service"]

log = logging.getLogger("jobs.serve")

APP_NAME = "birefnet"


def start_service(config: ServeConfig) -> str:
    """Deploy the application on Ray (joined, or embedded here) and return its base URL once
    every replica is up."""
    start_ray(config.ray_address)
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(build_app(config), name=APP_NAME, route_prefix=config.route_prefix, blocking=False)
    prefix = config.route_prefix.rstrip("/")
    return f"http://{config.host}:{config.port}{prefix}"


def serve_forever(config: ServeConfig) -> int:
    url = start_service(config)
    print(
        f"BiRefNet service at {url}/ (POST {url}/v1/segment, GET {url}/healthz); Ctrl-C stops it", flush=True
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        log.info("stopping the service")
        serve.delete(APP_NAME)
    return EXIT_OK


COMMAND = Command(
    name="serve",
    config=ServeConfig,
    run=serve_forever,
)

main = COMMAND.main
