"""The site and fleet console: a web map of every device, its pages, live events, actions.

Its own process (``satoyama-console``), reading what the notifier stored.  See
``docs/console.md``.
"""
