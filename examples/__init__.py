"""Examples of autolr_jax (a package so that tests and benchmarks import them)."""
