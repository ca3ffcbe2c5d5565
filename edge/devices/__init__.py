"""The device seam: what configuration names becomes the drivers and actuators the daemon runs."""

from __future__ import annotations

from edge.devices.lazy_metadata import install as _defer_entry_points

# Before anything here imports gpiozero (drivers.siren, drivers.pir ...): see lazy_metadata.
_defer_entry_points()
