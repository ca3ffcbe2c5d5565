"""The daemon's own health: sensor faults reported once, anomalies in sensor series, task
supervision, and what systemd is told (readiness, watchdog).
"""
