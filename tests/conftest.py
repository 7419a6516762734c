"""Shared test set-up: float32 parity needs full-precision matmuls on every backend."""

import jax

jax.config.update("jax_default_matmul_precision", "highest")
