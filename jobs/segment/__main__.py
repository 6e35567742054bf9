"""``python -m jobs.segment``."""

from .driver import main

raise SystemExit(main())
