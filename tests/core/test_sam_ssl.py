"""Seed 003's SAM-guided dual-task student: network, SDF, fusion, losses, label split and
the SAM pseudo-label step, on real PH2 / BUS-BRA data with the registered lesion-sam-tiny."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_lesion_diffkd.core.data.datasets import group_split, read_pair, scan_pairs
from napari_lesion_diffkd.core.data.preprocess import prepare_image, prepare_mask
from napari_lesion_diffkd.core.distillation.sam_ssl import DualTaskNet
from napari_lesion_diffkd.core.distillation.sam_ssl.evaluate import dice_batch
from napari_lesion_diffkd.core.distillation.sam_ssl.fusion import fuse_scores, fused_mask_prompt
from napari_lesion_diffkd.core.distillation.sam_ssl.losses import bernoulli_kl, rampup
from napari_lesion_diffkd.core.distillation.sam_ssl.sdf import normalised_sdf, sdf_batch
from napari_lesion_diffkd.core.distillation.sam_ssl.split import select_labelled
from napari_lesion_diffkd.core.sam.coords import longest_side_shape
from napari_lesion_diffkd.core.sam.prompts import erode_mask, equivalent_radius

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ph2_val_pair(data_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """A PH2 image of lesion-sam-tiny's validation split (SAM never trained on it)."""
    return read_pair(next(r for r in scan_pairs(data_root / "ph2_dermoscopy")
                          if r.id == "IMD009"))


@pytest.fixture(scope="module")
def sam_teacher():
    from napari_lesion_diffkd.core.distillation.sam_ssl.pseudo import SamTeacher
    from napari_lesion_diffkd.core.sam.loading import load_sam

    return SamTeacher(load_sam("lesion-sam-tiny").model)


def test_dual_task_network_shapes_and_config_round_trip() -> None:
    torch.manual_seed(0)
    net = DualTaskNet()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    logits, sdf = net(x)
    assert logits.shape == sdf.shape == (2, 1, 64, 64)
    assert sdf.abs().max() <= 1.0
    assert 100_000 < sum(p.numel() for p in net.parameters()) < 3_000_000  # MobileNet-small
    # Depthwise convolutions (groups == channels) are what makes it MobileNet-style.
    assert any(m.groups > 1 and m.groups == m.in_channels for m in net.modules()
               if isinstance(m, torch.nn.Conv2d))
    twin = DualTaskNet(**net.config())
    twin.load_state_dict(net.state_dict())
    net.eval(), twin.eval()
    torch.testing.assert_close(twin(x)[0], net(x)[0])
    three = DualTaskNet(decoder_widths=(16, 8, 8), widths=(8, 8, 8, 8, 8))
    assert three(x)[0].shape == (2, 1, 64, 64)
    with pytest.raises(ValueError, match="decoder_widths"):
        DualTaskNet(decoder_widths=(8,))


def test_sdf_sign_and_range_on_a_real_mask(ph2_val_pair) -> None:
    _, mask = ph2_val_pair
    small = prepare_mask(mask, 128)[0].numpy() > 0
    sdf = normalised_sdf(small)
    assert sdf.dtype == np.float32 and sdf.shape == small.shape
    assert np.all(sdf[small] > 0) and np.all(sdf[~small] < 0)
    assert sdf.max() == pytest.approx(1.0) and sdf.min() == pytest.approx(-1.0)
    # Deeper inside = larger: the centre of the lesion beats a pixel next to its edge.
    edge = small & ~erode_mask(small, 1.0)
    assert sdf[small].max() > sdf[edge].max()
    assert np.all(normalised_sdf(np.zeros((5, 5))) == -1)
    assert np.all(normalised_sdf(np.ones((5, 5))) == 1)
    batch = sdf_batch(torch.from_numpy(small[None, None].astype(np.float32)))
    np.testing.assert_array_equal(batch[0, 0].numpy(), sdf)


def test_fused_prompt_shape_frame_and_monotonicity(ph2_val_pair) -> None:
    _, mask = ph2_val_pair
    gt = (prepare_mask(mask, 128) > 0).float()[None]
    prob = 0.1 + 0.8 * gt
    sdf = sdf_batch(gt)
    hw = [longest_side_shape(*mask.shape, 256)]
    for mode in ("sdf-ramp", "soft"):
        prompt = fused_mask_prompt(prob, sdf, hw, 256, (64, 64), mode=mode)
        assert prompt.shape == (1, 1, 64, 64) and prompt.dtype == torch.float32
        assert prompt.abs().max() <= 16.0
        # Lesion inside the image area is positive; the padding below the image is not.
        low_h = round(hw[0][0] * 64 / 256)
        assert prompt[0, 0, low_h + 1:].max() < 0
        assert (prompt > 0).sum() > 0
        more = fused_mask_prompt((prob + 0.3).clamp(0, 1), (sdf + 0.3).clamp(-1, 1), hw, 256,
                                 (64, 64), mode=mode)
        assert torch.all(more >= prompt - 1e-6) and torch.any(more > prompt + 1e-3)
    # The SDF head moves the fused edge: same mask, lower SDF -> a smaller fused lesion.
    assert 0 < (fuse_scores(prob, sdf - 1.0) > 0).sum() < (fuse_scores(prob, sdf) > 0).sum()


def test_kl_is_zero_for_identical_predictions_and_positive_otherwise() -> None:
    torch.manual_seed(0)
    z = torch.randn(2, 1, 16, 16) * 4
    assert bernoulli_kl(z, z.clone()).item() == pytest.approx(0.0, abs=1e-7)
    assert bernoulli_kl(z, z, temperature=2.0).item() == pytest.approx(0.0, abs=1e-7)
    assert bernoulli_kl(z, -z).item() > 0.5
    assert bernoulli_kl(torch.full((1, 1, 2, 2), 50.0), torch.full((1, 1, 2, 2), 50.0)) == 0
    assert rampup(0, 100) == pytest.approx(np.exp(-5)) and rampup(100, 100) == 1.0
    assert rampup(30, 100) < rampup(60, 100) < 1.0


def test_label_fraction_is_group_aware_and_reproducible(data_root: Path) -> None:
    records = scan_pairs(data_root / "busbra_breast_ultrasound")
    train, val = group_split(records, 0.2, 0)
    assert any(sum(r.group == g for r in train) > 1 for g in {r.group for r in train})
    for fraction in (0.02, 0.04, 0.08):
        lab, unl = select_labelled(train, fraction, seed=0)
        assert len(lab) + len(unl) == len(train)
        assert not {r.group for r in lab} & {r.group for r in unl}
        assert not {r.group for r in lab} & {r.group for r in val}
        assert round(fraction * len(train)) <= len(lab) <= round(fraction * len(train)) + 2
        again, _ = select_labelled(train, fraction, seed=0)
        assert [r.id for r in again] == [r.id for r in lab]
    other, _ = select_labelled(train, 0.08, seed=1)
    assert {r.id for r in other} != {r.id for r in select_labelled(train, 0.08, seed=0)[0]}
    small, _ = select_labelled(train, 0.04, seed=0)
    assert len(small) < len(select_labelled(train, 0.08, seed=0)[0])
    with pytest.raises(ValueError):
        select_labelled(train, 0.0)


def test_pseudo_label_step_uses_sam_and_improves_a_poor_student_mask(
        ph2_val_pair, sam_teacher) -> None:
    image, mask = ph2_val_pair
    gt = (prepare_mask(mask, 128) > 0).float()[None]
    # A poor student: the lesion eroded by 35% of its radius, soft-ish probabilities.
    eroded = erode_mask(gt[0, 0].numpy() > 0, 0.35 * equivalent_radius(gt[0, 0].numpy()))
    student = torch.from_numpy(eroded.astype(np.float32))[None, None]
    prob, sdf = 0.05 + 0.9 * student, sdf_batch(student)
    emb, hw = sam_teacher.encode([image])
    ref = sam_teacher.refine(emb, hw, prob, sdf)
    assert ref.logits.shape == (1, 1, 128, 128) and ref.low_res.shape == (1, 1, 64, 64)
    assert ref.pseudo_labels.unique().tolist() in ([0.0, 1.0], [1.0], [0.0])
    student_dice = float(dice_batch(student, gt))
    pseudo_dice = float(dice_batch(ref.pseudo_labels, gt))
    assert not torch.equal(ref.pseudo_labels, student)  # SAM changed the target
    assert pseudo_dice > student_dice + 0.1 and pseudo_dice > 0.85
    # The refinement is SAM's: another decoder gives another answer.
    changed = sam_teacher.sam.mask_decoder.output_hypernetworks_mlps[0].layers[-1]
    saved = changed.weight.detach().clone()
    try:
        with torch.no_grad():
            changed.weight.mul_(-1)
        flipped = sam_teacher.refine(emb, hw, prob, sdf)
        assert not torch.allclose(flipped.logits, ref.logits)
    finally:
        with torch.no_grad():
            changed.weight.copy_(saved)
    # Same prompt, boxed: still a valid refinement of the same image.
    boxed = sam_teacher.refine(emb, hw, prob, sdf, with_box=True)
    assert float(dice_batch(boxed.pseudo_labels, gt)) > student_dice


def test_student_frame_round_trip_of_sam_logits(ph2_val_pair, sam_teacher) -> None:
    """A map pushed into SAM's padded frame and back lands where it started."""
    from napari_lesion_diffkd.core.distillation.sam_ssl.fusion import to_input_frame

    _, mask = ph2_val_pair
    gt = (prepare_mask(mask, 64) > 0).float()[None] * 2 - 1
    hw = [longest_side_shape(*mask.shape, 256)]
    padded = to_input_frame(gt, hw, 256)
    low = torch.nn.functional.interpolate(padded, size=(64, 64), mode="area")
    back = sam_teacher.to_student_frame(low, hw, 64)
    agree = ((back > 0) == (gt > 0)).float().mean()
    assert agree > 0.97
    assert prepare_image(np.zeros((4, 4, 3), np.uint8), 8, 3).shape == (3, 8, 8)
