"""Anomaly detector: an autoencoder over 64-point windows of a scalar series."""
