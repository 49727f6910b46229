"""napari (row, col) <-> SAM (x, y) <-> model-input frame conversions."""

from __future__ import annotations

import numpy as np
import pytest

from napari_lesion_diffkd.core.sam import coords
from napari_lesion_diffkd.core.sam.torchvision_shim import import_segment_anything


def test_points_swap_axes_and_round_trip_with_leading_axes() -> None:
    pts = np.array([[3.0, 10.0, 20.0], [3.0, 0.0, 5.5]])  # (z, row, col)
    xy = coords.napari_points_to_xy(pts)
    np.testing.assert_array_equal(xy, [[20.0, 10.0], [5.5, 0.0]])
    np.testing.assert_array_equal(coords.xy_to_napari_points(xy, leading=(3.0,)), pts)
    np.testing.assert_array_equal(coords.napari_points_to_xy([7, 9]), [[9, 7]])


def test_points_on_slice_selects_by_leading_coordinates() -> None:
    pts = np.array([[2.0, 1, 1], [2.4, 5, 5], [3.0, 7, 7]])
    assert coords.points_on_slice(pts, (2,)).tolist() == [True, True, False]
    assert coords.points_on_slice(pts[:, 1:], ()).all()
    with pytest.raises(ValueError):
        coords.points_on_slice(pts, (1, 2))


def test_rectangle_to_box_and_back() -> None:
    # napari rectangle vertices (row, col), any order; plus a leading slice axis.
    rect = np.array([[5, 10, 40], [5, 10, 100], [5, 60, 100], [5, 60, 40]], dtype=float)
    box = coords.napari_rectangle_to_xyxy(rect)
    np.testing.assert_array_equal(box, [40, 10, 100, 60])
    back = coords.xyxy_to_napari_rectangle(box, leading=(5,))
    np.testing.assert_array_equal(back, rect)
    # Two opposite corners (napari's compact form) and a reversed box give the same box.
    np.testing.assert_array_equal(coords.napari_rectangle_to_xyxy([[60, 100], [10, 40]]), box)
    np.testing.assert_array_equal(
        coords.napari_rectangle_to_xyxy(coords.xyxy_to_napari_rectangle([100, 60, 40, 10])), box)


def test_rotated_rectangle_becomes_its_axis_aligned_hull() -> None:
    diamond = np.array([[0, 5], [5, 10], [10, 5], [5, 0]], dtype=float)  # (row, col)
    np.testing.assert_array_equal(coords.napari_rectangle_to_xyxy(diamond), [0, 0, 10, 10])


def test_mask_box_matches_a_real_lesion_in_both_frames(real_images) -> None:
    _, mask = real_images["busbra"]
    box = coords.mask_to_xyxy(mask)
    rows, cols = np.nonzero(mask)
    assert box.tolist() == [cols.min(), rows.min(), cols.max(), rows.max()]
    rect = coords.xyxy_to_napari_rectangle(box)
    # napari's first vertex is the top-left pixel (row, col) of the lesion's box.
    assert rect[0].tolist() == [rows.min(), cols.min()]
    assert mask[int(rows.min()), :].any() and mask[:, int(cols.min())].any()
    assert coords.mask_to_xyxy(np.zeros((4, 4))) is None


def test_clip_box_to_image() -> None:
    np.testing.assert_array_equal(coords.clip_xyxy([-5, 3, 120, 90], (50, 100)), [0, 3, 99, 49])


@pytest.mark.parametrize("hw", [(385, 512), (353, 274), (256, 256), (97, 411)])
def test_input_frame_matches_segment_anything(hw: tuple[int, int]) -> None:
    import_segment_anything()
    from segment_anything.utils.transforms import ResizeLongestSide

    t = ResizeLongestSide(256)
    assert coords.longest_side_shape(*hw, 256) == t.get_preprocess_shape(*hw, 256)
    pts = np.array([[0.0, 0.0], [hw[1] - 1, hw[0] - 1], [17.5, 3.25]])
    np.testing.assert_allclose(coords.xy_to_input_frame(pts, hw, 256), t.apply_coords(pts, hw))
    box = np.array([[3.0, 4.0, 50.0, 60.0]])
    np.testing.assert_allclose(coords.xyxy_to_input_frame(box, hw, 256), t.apply_boxes(box, hw))
    np.testing.assert_allclose(
        coords.input_frame_to_xy(coords.xy_to_input_frame(pts, hw, 256), hw, 256), pts)


def test_box_region_includes_the_box_pixels_and_positive_clicks_outside_it() -> None:
    from napari_lesion_diffkd.core.sam.coords import box_region

    region = box_region([2.0, 1.0, 5.0, 3.0], (6, 8))
    expected = np.zeros((6, 8), dtype=bool)
    expected[1:4, 2:6] = True
    np.testing.assert_array_equal(region, expected)
    # Half a pixel of tolerance: 1.6 rounds into pixel 2, 5.4 into pixel 5.
    np.testing.assert_array_equal(box_region([1.6, 0.6, 5.4, 3.4], (6, 8)), expected)
    # A click at (7, 5) widens the region to the bounding box of box and click.
    widened = box_region([2.0, 1.0, 5.0, 3.0], (6, 8), np.array([[7.0, 5.0]]))
    assert widened[1:6, 2:8].all() and widened.sum() == 5 * 6
    # Boxes past the image edge are cut to it.
    assert box_region([-3.0, -3.0, 20.0, 20.0], (6, 8)).all()
