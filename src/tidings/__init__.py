"""Tidings: a notification platform — events in, in-app inbox and email out."""

__version__ = "0.1.0"
