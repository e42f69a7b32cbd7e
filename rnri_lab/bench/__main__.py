"""``python -m rnri_lab.bench``."""

from rnri_lab.bench import main

raise SystemExit(main())
