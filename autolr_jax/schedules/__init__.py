"""Learning-rate schedules (private modules; the public API is re-exported by autolr_jax)."""
