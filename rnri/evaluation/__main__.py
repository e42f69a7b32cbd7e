"""``python -m rnri.evaluation``."""

from rnri.evaluation import main

raise SystemExit(main())
