"""Learning-rate transformations (private modules; the public API is re-exported by autolr_jax)."""
