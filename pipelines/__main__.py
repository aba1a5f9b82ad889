"""``python -m pipelines`` is ``visionray``."""

from pipelines.entry.cli import main

raise SystemExit(main())
