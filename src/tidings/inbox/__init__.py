"""The in-app channel: inbox items, their flags, counts, and live updates."""
