"""``python -m jobs.train``."""

from .cli import main

raise SystemExit(main())
