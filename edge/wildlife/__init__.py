"""Wildlife: an animal detected chases it off at once (siren, strobe); a box trap's door is watched.

``deterrent`` and ``trap`` are the pure rules (no I/O, no clock, no threads); the daemon's
task that feeds them and records what they decide is ``watch``.
"""
