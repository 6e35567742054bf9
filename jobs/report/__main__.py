"""``python -m jobs.report``."""

from .cli import main

raise SystemExit(main())
