"""``python -m napari_lesion_diffkd.cli`` runs the ``lesion-diffkd`` command line."""

import sys

from napari_lesion_diffkd.cli import main

sys.exit(main())
