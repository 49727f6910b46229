"""Helper process for the crash tests: save N label versions of one image, one per line.

Usage: python label_writer.py PROJECT IMAGE COUNT AUTHOR

Version i is the image's first label rolled by i pixels along X, so its content is known.
After each committed save it prints ``<version id> <i>`` and flushes.
"""

from __future__ import annotations

import sys

import numpy as np

from napari_lesion_diffkd.core.store import ProjectStore


def expected(base: np.ndarray, i: int) -> np.ndarray:
    """The content of save number ``i``."""
    return np.roll(base, i, axis=1)


def main() -> None:
    project, image, count, author = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    with ProjectStore(project) as store:
        base = store.read_label(store.label_versions(image)[0])
        for i in range(count):
            version = store.save_label(image, expected(base, i), author=author, note=str(i))
            print(version.id, i, flush=True)


if __name__ == "__main__":
    main()
