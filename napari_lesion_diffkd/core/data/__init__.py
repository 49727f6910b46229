"""Image/volume readers and writers, training datasets and procedural phantoms."""
