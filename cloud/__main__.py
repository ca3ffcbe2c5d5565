"""``python -m cloud``: the same as the ``satoyama-notifier`` command."""

from __future__ import annotations

from cloud.cli import main

raise SystemExit(main())
