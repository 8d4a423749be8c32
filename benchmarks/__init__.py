"""Benchmarks of autolr_jax (``python -m benchmarks.<name>``)."""
