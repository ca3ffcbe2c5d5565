"""The cloud notifier: turns device events into e-mails for people."""
