"""npe2 sample-data contributions: procedural lesion phantoms (see core.data.phantoms)."""

from __future__ import annotations


def _pair(image, mask, name: str, **image_kwargs) -> list[tuple]:
    return [
        (image, {"name": name, **image_kwargs}, "image"),
        (mask.astype("uint8"), {"name": f"{name} reference mask", "visible": False}, "labels"),
    ]


def sample_dermoscopy() -> list[tuple]:
    from napari_lesion_diffkd.core.data.phantoms import fetch_dermoscopy_phantom

    image, mask = fetch_dermoscopy_phantom()
    return _pair(image, mask, "dermoscopy phantom", rgb=True,
                 metadata={"modality": "dermoscopy"})


def sample_ultrasound() -> list[tuple]:
    from napari_lesion_diffkd.core.data.phantoms import fetch_ultrasound_phantom

    image, mask = fetch_ultrasound_phantom()
    return _pair(image, mask, "ultrasound phantom", metadata={"modality": "US"})


def sample_ct() -> list[tuple]:
    from napari_lesion_diffkd.core.data.phantoms import fetch_ct_phantom
    from napari_lesion_diffkd.core.data.windows import window_limits

    image, mask = fetch_ct_phantom()
    return _pair(image, mask, "CT phantom", contrast_limits=window_limits("lung"),
                 metadata={"modality": "CT"})
