"""``python -m pipelines`` is ``visionray``."""

from pipelines.cli import main

raise SystemExit(main())
