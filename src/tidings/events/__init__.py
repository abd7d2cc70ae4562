"""Ingest: validate events, enforce idempotency, store them and enqueue their planning."""
