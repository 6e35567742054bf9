"""``python -m jobs.predict``."""

from .cli import main

raise SystemExit(main())
