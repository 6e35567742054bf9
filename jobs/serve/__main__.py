"""``python -m jobs.serve``."""

from .cli import main

raise SystemExit(main())
