"""What operators use to run Tidings: delivery timelines, dead letters, retention and
the ``doctor``'s checks."""
