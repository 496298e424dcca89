"""``python -m dtlive``: the ``dtlive`` command line (:mod:`dtlive.deploy.cli`)."""

import sys

from dtlive.deploy.cli import main

if __name__ == "__main__":
    sys.exit(main())
