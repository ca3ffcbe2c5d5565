"""Satoyama Edge: the field daemon (configuration, rules, outbox, uplink, CLI)."""

__version__ = "0.1.0"
