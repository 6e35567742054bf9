"""``python -m jobs.synthesize``."""

from .cli import main

raise SystemExit(main())
