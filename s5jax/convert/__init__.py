"""Official PyTorch baseline weights → s5jax variables (``separator``, ``tagger``)."""
