"""The device seam: what configuration names becomes the drivers and actuators the daemon runs."""
