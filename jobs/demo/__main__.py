"""``python -m jobs.demo``."""

from .cli import main

raise SystemExit(main())
