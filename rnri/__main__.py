"""``python -m rnri``: the command line (see ``rnri.cli``)."""

from rnri.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
