"""`python -m jobs.serve`: BiRefNet behind HTTP on Ray Serve, with a web page.

`birefnet serve` starts it on a local or joined Ray; a Serve config file (`infra/serve/birefnet.yaml`,
`import_path: jobs.serve:build_app`) starts it with `serve run` or `serve deploy`.
"""

from .cli import COMMAND, main, start_service
from .config import ServeConfig
from .deployments import build_app

__all__ = ["COMMAND", "ServeConfig", "build_app", "main", "start_service"]
