"""``python -m jobs.export``."""

from .cli import main

raise SystemExit(main())
