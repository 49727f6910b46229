"""Active learning: which unlabelled images to annotate next, and a simulation of the loop
with the ground truth as the oracle (``lesion-diffkd simulate-al``)."""
