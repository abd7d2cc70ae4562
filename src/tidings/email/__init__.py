"""The email channel: render, build MIME, sign (DKIM), unsubscribe, feedback, providers."""
