"""Events that arrive some other way than HTTP: from a NATS JetStream subject."""
