"""Inference: the S5 pipeline, chunking, model loading, file conventions, evaluation."""
