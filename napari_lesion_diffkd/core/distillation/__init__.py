"""Knowledge distillation from a diffusion teacher to a smaller student (EFKD, seed 000)."""
