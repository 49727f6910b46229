"""Headless core: never imports napari, Qt, magicgui or superqt."""
