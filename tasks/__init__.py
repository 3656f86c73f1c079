"""Prefect tasks: thin wrappers around mnist_models that decide retries, caching and where files go."""
