"""``python -m rnri.bench``."""

from rnri.bench import main

raise SystemExit(main())
