"""Scoring an encoder: features, kNN, metrics, Grad-CAM, 2-D embeddings."""
