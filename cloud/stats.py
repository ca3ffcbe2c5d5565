"""The notifier's counters since start, shared by its receiver, sender and timekeeper."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class NotifierStats:
    """Counters since start (for logs, the status line and tests)."""

    received: int = 0
    """MQTT messages taken off the events topic (including invalid and duplicates)."""
    accepted: int = 0
    """Events new to the store."""
    duplicates: int = 0
    invalid: int = 0
    unknown_site: int = 0
    folded: int = 0
    """Events that joined a burst already mailed (counted for its summary)."""
    sent: int = 0
    mark_window_max_s: float = 0.0
    """Longest time from the SMTP server accepting a mail to the store marking it sent:
    a kill in that window mails it again after the restart."""
    mark_window_total_s: float = 0.0
    deferred: int = 0
    failed: int = 0
    connections: int = 0
    statuses: int = 0
    telemetry: int = 0
    ticks: int = 0
    """Timekeeper rounds completed (tests wait on it after moving the clock)."""
    notices: int = 0
    """Summaries, reminders and offline / online notices this instance queued."""
    group_commits: int = 0
    """Transactions that stored several events at once (a backlog is committed in groups)."""
    rendered: int = 0
    """Mails rendered in full (a readdressed copy for another recipient does not count)."""
    refused_acked: int = 0
    """Messages refused for good whose id was still acknowledged to the device."""
    spoofed: int = 0
    """Events and telemetry batches refused because they spoke for another device or
    site than the topic's device may (or used an id of the notifier's own notices)."""
    id_collisions: int = 0
    """Events stored under a device-scoped id because another device's event holds their id."""
