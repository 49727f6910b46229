"""evaluate_prompts: the prompts it sends, the numbers it reports."""

from __future__ import annotations

import numpy as np
import pytest

from napari_lesion_diffkd.core.metrics import dice
from napari_lesion_diffkd.core.sam.coords import mask_to_xyxy
from napari_lesion_diffkd.core.sam.evaluation import evaluate_image, evaluate_prompts
from napari_lesion_diffkd.core.sam.prompts import bad_mask, expand_box
from napari_lesion_diffkd.core.sam.session import PromptResult

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _OracleSession:
    """Answers every prompt with the ground truth and records what it was asked."""

    def __init__(self, gt: np.ndarray) -> None:
        self.gt = gt
        self.calls: list[dict] = []
        self.last_encode_seconds = 0.01

    def set_image(self, image, key=None):
        return key

    def predict(self, **kwargs) -> PromptResult:
        self.calls.append(kwargs)
        return PromptResult(mask=self.gt.copy(), score=0.9, low_res_logits=np.zeros((4, 4)),
                            scores=np.array([0.9]), seconds=0.002)


def test_prompts_sent_and_scores_with_an_oracle(real_images) -> None:
    image, gt = real_images["busbra"]
    oracle = _OracleSession(gt)
    row = evaluate_image(oracle, image, gt)
    box_call, erode_call, shift_call = oracle.calls
    np.testing.assert_allclose(box_call["box_xyxy"], expand_box(mask_to_xyxy(gt), 1.05, gt.shape))
    eroded = bad_mask(gt, "erode", 0.3)
    np.testing.assert_array_equal(erode_call["mask"], eroded)
    x, y = erode_call["points_xy"][0]
    assert erode_call["point_labels"].tolist() == [1]
    assert gt[int(y), int(x)] and not eroded[int(y), int(x)]
    assert row["box_dice"] == 1.0 and row["erode_after"] == 1.0 and row["shift_after"] == 1.0
    assert row["erode_before"] == pytest.approx(dice(eroded, gt))
    assert row["erode_gain"] == pytest.approx(1.0 - row["erode_before"])
    assert row["prompt_ms"] == pytest.approx(2.0) and row["encode_ms"] == pytest.approx(10.0)
    assert 0.3 < row["erode_before"] < 0.9 and 0.3 < row["shift_before"] < 0.9
    assert shift_call["mask"] is not None


def test_real_model_summary_per_dataset(tiny_sam, real_records) -> None:
    records = [real_records["ph2"], real_records["busbra"], real_records["ct"]]
    out = evaluate_prompts(tiny_sam, records)
    assert out["all"]["n"] == 3 and set(out["per_dataset"]) == {
        "ph2_dermoscopy", "busbra_breast_ultrasound", "covid19_ct_infection"}
    for row in out["rows"]:
        for key in ("box_dice", "erode_before", "erode_after", "shift_before", "shift_after"):
            assert 0.0 <= row[key] <= 1.0
        assert row["erode_gain"] == pytest.approx(row["erode_after"] - row["erode_before"])
    summary = out["all"]
    assert summary["box_dice"] == pytest.approx(np.mean([r["box_dice"] for r in out["rows"]]))
    assert 0 < summary["prompt_ms_median"] <= summary["prompt_ms_p90"]
    # Click-only variant and in-memory pairs (empty masks are skipped).
    image, gt = np.zeros((40, 50), np.uint8), np.zeros((40, 50), bool)
    assert evaluate_prompts(tiny_sam, [(image, gt)], use_mask_prompt=False)["all"]["n"] == 0
