"""Recipients' profiles, topics and their subscribers."""
