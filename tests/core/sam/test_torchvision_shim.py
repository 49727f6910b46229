"""The four torchvision stand-ins segment_anything needs, and how they are installed."""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from napari_lesion_diffkd.core.sam import torchvision_shim as shim


def test_resize_is_pil_bilinear_as_segment_anything_uses_it(real_images) -> None:
    sa = shim.import_segment_anything()
    from segment_anything.utils.transforms import ResizeLongestSide

    image = real_images["ph2"][0]  # (Y, X, 3) uint8, landscape
    out = ResizeLongestSide(256).apply_image(image)
    new_h, new_w = ResizeLongestSide.get_preprocess_shape(*image.shape[:2], 256)
    reference = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    assert out.shape == (new_h, new_w, 3) and max(out.shape[:2]) == 256
    np.testing.assert_array_equal(out, reference)
    # An independent reference: torch's antialiased bilinear (torchvision's tensor path).
    t = torch.from_numpy(image.transpose(2, 0, 1).copy()).float()[None]
    torch_ref = F.interpolate(t, size=(new_h, new_w), mode="bilinear", align_corners=False,
                              antialias=True)[0].permute(1, 2, 0).numpy()
    assert np.abs(out.astype(np.float32) - torch_ref).mean() < 1.0
    assert sa.SamPredictor is not None


def test_resize_int_size_matches_the_shorter_edge_and_tensors_work() -> None:
    img = Image.fromarray(np.zeros((40, 100), dtype=np.uint8))
    assert shim.resize(img, 20).size == (50, 20)  # PIL size is (W, H)
    assert shim.resize(img, [30, 60]).size == (60, 30)
    t = torch.arange(2 * 8 * 12, dtype=torch.float32).reshape(2, 8, 12)
    out = shim.resize(t, (4, 6))
    assert out.shape == (2, 4, 6)
    expected = F.interpolate(t[:, None], size=(4, 6), mode="bilinear", align_corners=False,
                             antialias=True)[:, 0]
    torch.testing.assert_close(out, expected)
    u8 = shim.resize(torch.full((1, 5, 5), 200, dtype=torch.uint8), (3, 3))
    assert u8.dtype == torch.uint8 and int(u8.min()) == 200


def test_to_pil_image_modes() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    im = shim.to_pil_image(rgb)
    assert im.mode == "RGB" and im.size == (7, 5)
    np.testing.assert_array_equal(np.asarray(im), rgb)
    assert shim.to_pil_image(rgb[:, :, 0]).mode == "L"
    chw = torch.tensor(rgb.transpose(2, 0, 1)).float() / 255
    np.testing.assert_array_equal(np.asarray(shim.to_pil_image(chw)), rgb)
    with pytest.raises(TypeError):
        shim.to_pil_image(rgb.astype(np.float32))


def test_box_area_and_nms_on_hand_cases() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 25], [0, 0, 10, 10.0]])
    torch.testing.assert_close(shim.box_area(boxes), torch.tensor([100.0, 100, 50, 100]))
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # IoU(0, 1) = 81 / 119 = 0.68; box 3 duplicates box 0 and scores higher.
    assert shim.nms(boxes, scores, 0.5).tolist() == [3, 2]
    assert shim.nms(boxes, scores, 0.7).tolist() == [3, 1, 2]
    # Suppression needs IoU strictly above the threshold: identical boxes at threshold 1.
    assert shim.nms(boxes[[0, 3]], scores[[0, 3]], 1.0).tolist() == [1, 0]
    # Categories never suppress each other.
    idxs = torch.tensor([0, 1, 0, 0])
    assert shim.batched_nms(boxes, scores, idxs, 0.5).tolist() == [3, 1, 2]
    assert shim.batched_nms(boxes[:0], scores[:0], idxs[:0], 0.5).numel() == 0


def test_stand_ins_are_removed_after_import_in_a_fresh_interpreter() -> None:
    code = (
        "import sys\n"
        "from napari_lesion_diffkd.core.sam import torchvision_shim as s\n"
        "real = s.torchvision_importable()\n"
        "sa = s.import_segment_anything()\n"
        "from segment_anything.utils import transforms as t\n"
        "from segment_anything import automatic_mask_generator as a\n"
        "print(real, 'torchvision' in sys.modules, t.resize is s.resize,"
        " a.batched_nms is s.batched_nms)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    if out[0] == "True":  # a machine with a working torchvision: the real one is used
        assert out[2:] == ["False", "False"]
    else:
        assert out[1:] == ["False", "True", "True"]


def test_real_torchvision_is_left_alone(monkeypatch) -> None:
    fake = types.ModuleType("torchvision")
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    with shim.stand_ins_installed() as installed:
        assert installed is False
        assert sys.modules["torchvision"] is fake
    assert sys.modules["torchvision"] is fake
