"""Status webhooks: producers' endpoints that hear about their deliveries' state changes,
signed per the Standard Webhooks spec, retried on their own schedule, with a log."""
