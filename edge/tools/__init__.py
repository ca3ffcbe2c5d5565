"""What people run beside the daemon: ``edge check`` (installers), ``edge bench`` (bench engineers),
``edge demo`` (a whole simulated site).
"""
