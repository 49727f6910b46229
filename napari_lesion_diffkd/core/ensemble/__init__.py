"""Fusion of K sampled masks (mean, majority, STAPLE) and uncertainty maps."""
