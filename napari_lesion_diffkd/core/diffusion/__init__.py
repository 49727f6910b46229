"""Noise schedules, prediction targets and samplers (each a separate object)."""
