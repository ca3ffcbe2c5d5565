"""Device drivers: one device protocol each.  Imports nothing of ours."""
