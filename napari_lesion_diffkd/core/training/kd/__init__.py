"""Distillation objectives that the diffusion trainer runs in its own loop (EFKD, trajectory
KD, the spread term): they live under training so that the trainer never imports the
distillation recipes above it (sam-ssl, ts-kd, spread calibration)."""
