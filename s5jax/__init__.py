"""s5jax: spatial semantic segmentation of sound scenes (DCASE 2025 Task 4) in JAX/Flax."""

__version__ = "0.1.0"
SAMPLE_RATE = 32_000
