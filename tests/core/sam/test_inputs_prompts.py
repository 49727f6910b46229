"""Model inputs (images, mask prompts) and simulated prompts (boxes, clicks, bad masks)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_lesion_diffkd.core.metrics import dice
from napari_lesion_diffkd.core.sam import inputs, prompts
from napari_lesion_diffkd.core.sam.coords import mask_to_xyxy


def _disc(shape=(64, 80), centre=(30, 40), radius=12) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_to_uint8_rgb_handles_gray_16bit_float_and_alpha() -> None:
    gray = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    out = inputs.to_uint8_rgb(gray)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] == 0 and out[1, 1, 2] == 255 and out[0, 1, 1] == round(255 / 4)
    rgba = np.zeros((3, 4, 4), dtype=np.uint8)
    assert inputs.to_uint8_rgb(rgba).shape == (3, 4, 3)
    assert inputs.to_uint8_rgb(np.ones((3, 4, 1), np.float32)).shape == (3, 4, 3)
    with pytest.raises(ValueError):
        inputs.to_uint8_rgb(np.zeros((2, 3, 3, 3)))


def test_image_to_input_keeps_the_aspect_ratio(real_images) -> None:
    image, mask = real_images["busbra"]  # portrait gray
    tensor, hw = inputs.image_to_input(image, 256)
    assert tensor.shape == (1, 3, *hw) and max(hw) == 256 and hw[0] > hw[1]
    m = inputs.mask_to_input_frame(mask, hw)
    assert m.shape == hw
    assert abs(m.mean() - mask.mean()) < 0.01


def test_signed_distance_sign_and_edge_values() -> None:
    m = np.zeros((7, 7), dtype=bool)
    m[2:5, 2:5] = True
    sdf = inputs.signed_distance(m)
    assert sdf[3, 3] == pytest.approx(1.5) and sdf[2, 2] == pytest.approx(0.5)
    assert sdf[1, 3] == pytest.approx(-0.5) and sdf[0, 3] == pytest.approx(-1.5)
    assert np.isneginf(inputs.signed_distance(np.zeros((3, 3), bool))).all()


def test_mask_prompt_logits_are_positive_inside_and_clipped(real_images) -> None:
    _, mask = real_images["ph2"]
    logits = inputs.mask_to_prompt_logits(mask, 256, (64, 64))
    assert logits.shape == (64, 64) and logits.dtype == np.float32
    assert logits.max() <= inputs.MASK_PROMPT_CLIP and logits.min() >= -inputs.MASK_PROMPT_CLIP
    # Inside the lesion (in the low-res padded frame) positive, the padding strongly negative.
    scale = 64 / max(mask.shape)
    ys, xs = np.nonzero(mask)
    cy, cx = int(np.median(ys) * scale), int(np.median(xs) * scale)
    assert logits[cy, cx] > 0
    assert logits[-1, -1] == -inputs.MASK_PROMPT_CLIP
    lowres_mask = logits > 0
    area_ratio = lowres_mask.sum() / (mask.sum() * scale**2)
    assert 0.9 < area_ratio < 1.1


def test_expand_and_jitter_box() -> None:
    box = np.array([10.0, 20.0, 109.0, 69.0])
    big = prompts.expand_box(box, 1.05, (200, 200))
    assert big[2] - big[0] == pytest.approx(99 * 1.05)
    assert big[3] - big[1] == pytest.approx(49 * 1.05)
    assert (big[0] + big[2]) / 2 == pytest.approx(59.5)
    rng = np.random.default_rng(0)
    for _ in range(200):
        j = prompts.jitter_box(box, rng, (200, 200))
        moves = np.abs(j - box) / np.array([100, 50, 100, 50])
        assert np.all(moves >= 0.05 - 1e-9) and np.all(moves <= 0.10 + 1e-9)
    edge = prompts.jitter_box(np.array([0.0, 0.0, 5.0, 5.0]), rng, (6, 6))
    assert edge.min() >= 0 and edge.max() <= 5 and edge[2] - edge[0] >= 1


def test_bad_masks_are_worse_in_the_intended_way(real_masks) -> None:
    for gt in real_masks[:6]:
        eroded = prompts.bad_mask(gt, "erode", 0.3)
        assert eroded.sum() < gt.sum() and not (eroded & ~gt).any()
        dilated = prompts.bad_mask(gt, "dilate", 0.3)
        assert dilated.sum() > gt.sum() and not (gt & ~dilated).any()
        shifted = prompts.bad_mask(gt, "shift", 0.2)
        assert dice(shifted, gt) < 0.95
    disc = _disc()
    moved = prompts.bad_mask(disc, "shift", 0.2)  # box 25 x 25 -> (5, 5) down-right
    assert np.argwhere(moved).mean(0) == pytest.approx(np.argwhere(disc).mean(0) + 5)
    rng = np.random.default_rng(1)
    assert all(dice(prompts.random_bad_mask(disc, rng), disc) < 1 for _ in range(10))


def test_largest_error_click_hits_the_centre_of_the_biggest_miss() -> None:
    gt = np.zeros((40, 60), dtype=bool)
    gt[5:15, 5:15] = True  # small miss
    gt[20:35, 30:55] = True  # large miss, centre (27, 42)
    pred = np.zeros_like(gt)
    pred[0:3, 0:3] = True  # a small false positive
    x, y, label = prompts.largest_error_click(pred, gt)
    assert label == 1 and gt[int(y), int(x)]
    assert abs(y - 27) <= 1 and abs(x - 42) <= 1
    fp_only = np.zeros_like(gt)
    fp_only[0:20, 0:20] = True
    x, y, label = prompts.largest_error_click(fp_only | gt, gt)
    assert label == 0 and not gt[int(y), int(x)]
    assert prompts.largest_error_click(fp_only | gt, gt, positive_only=True) is None
    assert prompts.largest_error_click(gt, gt) is None


def test_sampled_clicks_have_consistent_labels(real_masks) -> None:
    rng = np.random.default_rng(0)
    for gt in real_masks[:6]:
        bad = prompts.random_bad_mask(gt, rng)
        click = prompts.sample_error_click(bad, gt, rng)
        if click is not None:
            x, y, label = click
            assert bad[int(y), int(x)] != gt[int(y), int(x)] and label == int(gt[int(y), int(x)])
        x, y, label = prompts.sample_positive_click(gt, rng)
        assert gt[int(y), int(x)] and label == 1
        x, y, label = prompts.sample_negative_click(gt, rng)
        box = mask_to_xyxy(gt)
        assert not gt[int(y), int(x)] and label == 0
        assert box[0] - 0.31 * (box[2] - box[0]) - 1 <= x <= box[2] + 0.31 * (box[2] - box[0]) + 1
