"""PromptSession: cached embeddings, decoder-only prompts, image-frame masks for any shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_lesion_diffkd.core.sam.coords import mask_to_xyxy
from napari_lesion_diffkd.core.sam.inputs import mask_to_prompt_logits
from napari_lesion_diffkd.core.sam.session import PromptSession
from napari_lesion_diffkd.core.sam.torchvision_shim import import_segment_anything

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", ["ph2", "busbra", "ct"])
def test_masks_come_back_in_the_image_frame(tiny_sam, real_images, name: str) -> None:
    image, gt = real_images[name]
    session = PromptSession(tiny_sam)
    session.set_image(image)
    box = mask_to_xyxy(gt)
    result = session.predict(box_xyxy=box)
    assert result.mask.shape == gt.shape and result.mask.dtype == np.bool_
    assert result.low_res_logits.shape == (64, 64) and result.scores.shape == (1,)
    assert isinstance(result.score, float) and result.seconds > 0
    click = session.predict(points_xy=np.array([[box[0] + 5, box[1] + 5]]))
    assert click.scores.shape == (3,) and click.score == pytest.approx(click.scores.max())
    refined = session.predict(points_xy=np.array([[10.0, 12.0]]), point_labels=np.array([0]),
                              mask_logits=click.low_res_logits, return_logits=True)
    assert refined.scores.shape == (1,) and refined.logits.shape == gt.shape
    np.testing.assert_array_equal(refined.mask, refined.logits > 0)


@pytest.mark.parametrize("name", ["ph2", "busbra"])
def test_same_answers_as_segment_anything_predictor(tiny_sam, real_images, name: str) -> None:
    """Preprocessing, prompt frames and post-processing equal SamPredictor's (gray -> RGB)."""
    sa = import_segment_anything()
    image, gt = real_images[name]
    rgb = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image
    predictor = sa.SamPredictor(tiny_sam)
    predictor.set_image(rgb)
    session = PromptSession(tiny_sam)
    session.set_image(image)
    torch.testing.assert_close(session.current.features, predictor.features)
    box = mask_to_xyxy(gt)
    pts = np.array([[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], [2.0, 3.0]])
    labels = np.array([1, 0])
    masks, scores, low = predictor.predict(point_coords=pts, point_labels=labels, box=box,
                                           multimask_output=False, return_logits=True)
    ours = session.predict(points_xy=pts, point_labels=labels, box_xyxy=box, return_logits=True,
                          clip_to_box=False)  # SamPredictor does not clip
    np.testing.assert_allclose(ours.logits, masks[0], atol=1e-5)
    np.testing.assert_allclose(ours.low_res_logits, low[0], atol=1e-5)
    assert ours.score == pytest.approx(float(scores[0]), abs=1e-6)


def test_embeddings_are_cached_per_key_with_lru_eviction(tiny_sam, real_images) -> None:
    session = PromptSession(tiny_sam, cache_size=2)
    a, b, c = (real_images[k][0] for k in ("ph2", "busbra", "ct"))
    key_a = session.set_image(a)
    session.set_image(a.copy())  # same content, same key: no new encoding
    assert session.encode_count == 1
    session.set_image(b, key=("busbra", 0))
    session.set_image(a)
    assert session.encode_count == 2
    session.set_image(c)  # evicts the least recently used: b
    session.set_image(a)
    assert session.encode_count == 3 and session.set_image(a) == key_a
    session.set_image(b, key=("busbra", 0))
    assert session.encode_count == 4


def test_mask_prompt_from_a_binary_mask(tiny_sam, real_images) -> None:
    image, gt = real_images["busbra"]
    session = PromptSession(tiny_sam)
    session.set_image(image)
    via_mask = session.predict(mask=gt)
    via_logits = session.predict(mask_logits=mask_to_prompt_logits(gt, 256, (64, 64)))
    np.testing.assert_array_equal(via_mask.low_res_logits, via_logits.low_res_logits)
    with pytest.raises(ValueError, match="mask shape"):
        session.predict(mask=gt[:-1])
    with pytest.raises(ValueError, match="mask_logits"):
        session.predict(mask_logits=np.zeros((32, 32)))
    with pytest.raises(ValueError, match="empty prompt"):
        session.predict()


def test_predict_needs_an_image(tiny_sam) -> None:
    with pytest.raises(RuntimeError, match="set_image"):
        PromptSession(tiny_sam).predict(box_xyxy=np.array([0, 0, 5, 5]))


def test_box_prompt_masks_are_clipped_to_the_box(tiny_sam, real_images) -> None:
    """Nothing outside a box prompt is lesion; inside, the clip changes nothing; a positive
    click outside the box widens what is kept."""
    from napari_lesion_diffkd.core.sam.coords import box_region

    image, gt = real_images["busbra"]
    session = PromptSession(tiny_sam)
    session.set_image(image)
    h, w = gt.shape
    box = np.array([w * 0.3, h * 0.3, w * 0.6, h * 0.6])
    free = session.predict(box_xyxy=box, clip_to_box=False, return_logits=True)
    clipped = session.predict(box_xyxy=box, return_logits=True)
    region = box_region(box, gt.shape)
    assert (free.mask & ~region).any(), "the random model should spill outside the box"
    assert not (clipped.mask & ~region).any()
    np.testing.assert_array_equal(clipped.mask[region], free.mask[region])
    assert clipped.logits[~region].max() <= -10.0
    np.testing.assert_array_equal(clipped.low_res_logits, free.low_res_logits)
    click = np.array([[w * 0.9, h * 0.9]])
    widened = session.predict(box_xyxy=box, points_xy=click, return_logits=True)
    assert not (widened.mask & ~box_region(box, gt.shape, click)).any()
    np.testing.assert_array_equal(widened.mask, widened.logits > 0)


@pytest.mark.parametrize("name", ["busbra", "ph2"])
def test_test_time_flip_averages_the_mirrored_answer(tiny_sam, real_images, name) -> None:
    """With the flip on, the logits are the mean of the plain answer and the answer for the
    mirrored image and prompts, mirrored back; mask logits from a previous answer skip it."""
    from napari_lesion_diffkd.core.sam.sam_bundle import LoadedSam

    image, gt = real_images[name]
    box = mask_to_xyxy(gt)
    points = np.array([[box[0] + 4.0, box[1] + 6.0], [2.0, 3.0]])
    labels = np.array([1, 0])
    last_x = gt.shape[1] - 1
    plain = PromptSession(tiny_sam, test_time_flip=False)
    plain.set_image(image)
    a = plain.predict(points_xy=points, point_labels=labels, box_xyxy=box, mask=gt,
                      return_logits=True, clip_to_box=False)
    plain.set_image(np.ascontiguousarray(image[:, ::-1]))
    f_points = points.copy()
    f_points[:, 0] = last_x - f_points[:, 0]
    b = plain.predict(points_xy=f_points, point_labels=labels,
                      box_xyxy=np.array([last_x - box[2], box[1], last_x - box[0], box[3]]),
                      mask=gt[:, ::-1], return_logits=True, clip_to_box=False)
    tta = PromptSession(LoadedSam(tiny_sam, "t", "tiny", {"test_time_flip": True}))
    assert tta.test_time_flip
    tta.set_image(image)
    both = tta.predict(points_xy=points, point_labels=labels, box_xyxy=box, mask=gt,
                       return_logits=True, clip_to_box=False)
    np.testing.assert_allclose(both.logits, (a.logits + b.logits[:, ::-1]) / 2, atol=1e-4)
    assert both.score == pytest.approx((a.score + b.score) / 2, abs=1e-5)
    np.testing.assert_array_equal(both.low_res_logits, a.low_res_logits)
    refined = tta.predict(box_xyxy=box, mask_logits=a.low_res_logits, return_logits=True,
                          clip_to_box=False)
    plain.set_image(image)
    same = plain.predict(box_xyxy=box, mask_logits=a.low_res_logits, return_logits=True,
                         clip_to_box=False)
    np.testing.assert_allclose(refined.logits, same.logits, atol=1e-5)
