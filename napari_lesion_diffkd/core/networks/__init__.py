"""Denoising networks: map (x_t, t, image condition) to a prediction."""
