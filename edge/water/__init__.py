"""Water level: probe samples -> averaged readings -> stage, rise and observation outcomes.

``rule`` is the pure rule (no I/O, no clock, no threads); ``watch`` is the daemon task that
reads one level sensor, feeds the rule and records what it decides.  ``pair`` (pure) and
``pair_watch`` judge two gauges on the same water by their difference (``same_water_as``).
"""
