"""``python -m jobs.evaluate``."""

from .cli import main

raise SystemExit(main())
