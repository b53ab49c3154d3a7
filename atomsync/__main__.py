"""`python -m atomsync` is the same program as the `atomsync` console script."""

import sys

from atomsync.cli import main

sys.exit(main())
