"""The shipped lesion-sam-tiny on held-out PH2 and BUS-BRA images (its model card's claims)."""

from __future__ import annotations

import pytest

from napari_lesion_diffkd.core.data.datasets import scan_pairs
from napari_lesion_diffkd.core.sam.evaluation import evaluate_prompts
from napari_lesion_diffkd.core.sam.loading import load_sam


@pytest.fixture(scope="module")
def sam():
    return load_sam("lesion-sam-tiny")


def _held_out(sam, folder, n):
    val_ids = set(sam.config["provenance"]["val_ids"])
    records = [r for r in scan_pairs(folder) if r.id in val_ids]
    assert len(records) >= n
    return records[:n]


def test_box_prompt_and_one_click_on_held_out_ph2(sam, data_root):
    result = evaluate_prompts(sam, _held_out(sam, data_root / "ph2_dermoscopy", 8))["all"]
    assert result["box_dice"] > 0.88
    assert result["erode_after"] > result["erode_before"] + 0.1  # one click repairs a bad mask


def test_box_prompt_on_held_out_busbra(sam, data_root):
    result = evaluate_prompts(
        sam, _held_out(sam, data_root / "busbra_breast_ultrasound", 8))["all"]
    assert result["box_dice"] > 0.75
    assert result["shift_after"] > result["shift_before"]


def test_box_dice_target_on_the_whole_held_out_ph2_and_busbra(sam, data_root):
    """The SAM issue's target, with the app's settings (clip to the box, test-time flip)."""
    assert sam.config.get("test_time_flip") is True
    for folder in ("ph2_dermoscopy", "busbra_breast_ultrasound"):
        records = _held_out(sam, data_root / folder, 32)
        result = evaluate_prompts(sam, records, bad_masks=())["all"]
        assert result["n"] == len(records)
        assert result["box_dice"] >= 0.88, (folder, result["box_dice"])
