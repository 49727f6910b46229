"""The thin napari layer: npe2 contributions, widgets and workers."""
