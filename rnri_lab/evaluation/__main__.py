"""``python -m rnri_lab.evaluation``."""

from rnri_lab.evaluation import main

raise SystemExit(main())
