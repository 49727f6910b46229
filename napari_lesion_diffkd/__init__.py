"""napari-lesion-diffkd: lesion segmentation with diffusion teachers and distilled students.

The headless library lives in :mod:`napari_lesion_diffkd.core`; the napari layer in
:mod:`napari_lesion_diffkd.plugin`. Importing this package has no side effects and does not
import torch, napari or Qt.
"""

__version__ = "0.1.0"
