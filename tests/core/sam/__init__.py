"""Tests of the Segment Anything core (napari_lesion_diffkd.core.sam)."""
