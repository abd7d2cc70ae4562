"""API keys for producers, signed tokens for end users, and the FastAPI dependencies."""
