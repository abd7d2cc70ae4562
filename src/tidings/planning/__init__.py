"""Deciding, per recipient and channel, what should happen and why. Records nothing."""
