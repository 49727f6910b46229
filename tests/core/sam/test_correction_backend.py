"""The correction panel's SAM backend (``core/sam/correction_backend.py``) with the shipped
``lesion-sam-tiny`` on held-out PH2 images (validation split of the SAM and of the
dermoscopy models): napari (row, col) prompts reach SAM in its own frame, the embedding is
computed once per image, the start mask is the mask prompt and comes back when nothing
is prompted, and bad requests or models give readable errors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from skimage.io import imread

from napari_lesion_diffkd.core.metrics import dice
from napari_lesion_diffkd.core.sam.coords import mask_to_xyxy, xyxy_to_napari_rectangle
from napari_lesion_diffkd.core.sam.correction_backend import (
    DEFAULT_SAM,
    load_correction_backend,
    sam_choices,
)
from napari_lesion_diffkd.core.sam.loading import CheckpointUnavailableError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HELD_OUT = ("IMD009", "IMD018", "IMD027", "IMD090")  # val_ids of lesion-sam-tiny's split


@pytest.fixture(scope="module")
def backend():
    return load_correction_backend(DEFAULT_SAM, device="cpu")


@pytest.fixture(scope="module")
def held_out(data_root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    root = data_root / "ph2_dermoscopy"
    return [(imread(next((root / "images").glob(f"{i}.*"))),
             imread(root / "masks" / f"{i}.png") > 127) for i in HELD_OUT]


def request(image, start=None, points=(), labels=(), box=None, key="img"):
    return SimpleNamespace(image=image, start=np.zeros(image.shape[:2], bool)
                           if start is None else start,
                           points=np.asarray(points, float).reshape(-1, 2),
                           point_labels=np.asarray(labels, int), box=box, key=key)


def napari_box(gt: np.ndarray, margin: float = 5.0) -> np.ndarray:
    """(4, 2) napari rectangle (row, col) around the lesion, ``margin`` px out."""
    return xyxy_to_napari_rectangle(mask_to_xyxy(gt) + np.array([-1, -1, 1, 1]) * margin)


def test_box_prompts_on_held_out_ph2_and_one_encoding_per_image(backend, held_out) -> None:
    encodes = backend.session.encode_count
    scores = []
    for n, (image, gt) in enumerate(held_out):
        mask = backend.propose(request(image, box=napari_box(gt), key=n))
        assert mask.shape == gt.shape and mask.dtype == bool
        scores.append(dice(mask, gt))
    print("box Dice on held-out PH2:", np.round(scores, 3))
    assert min(scores) > 0.85 and np.mean(scores) > 0.9
    assert backend.session.encode_count == encodes + len(held_out)
    image, gt = held_out[0]
    # Same image again: decoder only (the embedding is cached per key and content) ...
    backend.propose(request(image, box=napari_box(gt, 15), key=0))
    assert backend.session.encode_count == encodes + len(held_out)
    # ... new pixels under the same key: encoded again, never a stale embedding.
    backend.propose(request(np.ascontiguousarray(image[::-1]), box=napari_box(gt), key=0))
    assert backend.session.encode_count == encodes + len(held_out) + 1


def test_points_are_napari_row_col_and_labels_matter(backend, held_out) -> None:
    image, gt = held_out[1]
    rows, cols = np.nonzero(gt)
    centre = (float(np.median(rows)), float(np.median(cols)))  # (row, col) inside the lesion
    inside = backend.propose(request(image, points=[centre], labels=[1]))
    assert inside[int(centre[0]), int(centre[1])] and dice(inside, gt) > 0.7
    # A background click far from the lesion, as a positive click, marks something else.
    corner = (10.0, 10.0)
    assert not gt[10, 10]
    with_neg = backend.propose(request(image, points=[centre, corner], labels=[1, 0]))
    assert not with_neg[10, 10] and dice(with_neg, gt) > 0.7


def test_start_mask_is_the_mask_prompt_and_comes_back_unprompted(backend, held_out) -> None:
    image, gt = held_out[2]
    from napari_lesion_diffkd.core.sam.prompts import bad_mask

    start = bad_mask(gt, "erode", 0.3)
    assert np.array_equal(backend.propose(request(image, start=start)), start)
    assert backend.last is None
    rows, cols = np.nonzero(gt & ~start)
    click = [(float(rows[len(rows) // 2]), float(cols[len(cols) // 2]))]
    backend.use_start_mask = True
    fixed = backend.propose(request(image, start=start, points=click, labels=[1]))
    assert dice(fixed, gt) > dice(start, gt) + 0.1 and backend.last is not None


def test_bad_requests_and_models_give_readable_errors(backend, held_out, tmp_path,
                                                     monkeypatch) -> None:
    monkeypatch.setenv("LESION_DIFFKD_CACHE", str(tmp_path))  # no official SAM cached
    image, gt = held_out[0]
    with pytest.raises(ValueError, match="does not match the image"):
        backend.propose(request(image, start=np.zeros((3, 3), bool), box=napari_box(gt)))
    with pytest.raises(ValueError, match="point labels"):
        backend.propose(request(image, points=[(5, 5)], labels=[1, 0]))
    with pytest.raises(LookupError, match="not a SAM bundle"):
        load_correction_backend("no-such-sam", device="cpu")
    with pytest.raises(CheckpointUnavailableError, match="not in the cache"):
        load_correction_backend("sam_vit_b", device="cpu")
    choices = [label for label, _ in sam_choices() if label != "medsam-lite"]  # where installed
    assert choices[0] == DEFAULT_SAM and "sam_vit_b" in choices and "dermoscopy-student" \
        not in choices
