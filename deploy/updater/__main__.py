"""``python -m deploy.updater``: the same as ``satoyama-update``."""

import sys

from deploy.updater.cli import main

sys.exit(main())
