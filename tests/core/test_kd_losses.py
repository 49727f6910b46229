"""Tests of the EFKD / general KD losses (``core/training/kd/kd_losses.py``) on real PH2 masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from napari_lesion_diffkd.core.data.preprocess import prepare_mask
from napari_lesion_diffkd.core.data.readers import read_image
from napari_lesion_diffkd.core.training.kd.kd_losses import (
    LAMBDA_BODY,
    LAMBDA_EDGE,
    efkd_loss,
    efkd_region_masks,
    general_kd_loss,
)
from napari_lesion_diffkd.core.training.losses import boundary_pixels

T = 250  # seed 000 §IV-A

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _read_masks(pairs: list[tuple[Path, Path]], size: int) -> torch.Tensor:
    """(B, 1, size, size) float32 masks in {0, 1} from real PH2 label files."""
    masks = [prepare_mask(read_image(m).data, size) for _, m in pairs]
    return (torch.stack(masks) + 1) / 2


@pytest.fixture(scope="module")
def masks64(ph2_pairs: list[tuple[Path, Path]]) -> torch.Tensor:
    """Four real PH2 masks at 64 x 64: (4, 1, 64, 64) float32 {0, 1}."""
    return _read_masks(ph2_pairs[:4], 64)


@pytest.fixture(scope="module")
def masks128(ph2_pairs: list[tuple[Path, Path]]) -> torch.Tensor:
    """The same four masks at 128 x 128."""
    return _read_masks(ph2_pairs[:4], 128)


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_constants_follow_seed() -> None:
    assert (LAMBDA_EDGE, LAMBDA_BODY) == (5.0, 2.0)


# -- eq. 2 -------------------------------------------------------------------------------------
def test_general_kd_loss_is_the_elementwise_mse() -> None:
    s, t = _randn(3, 2, 8, 8, seed=0), _randn(3, 2, 8, 8, seed=1)
    loss = general_kd_loss(s, t)
    hand = ((s.double().numpy() - t.double().numpy()) ** 2).sum() / s.numel()
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert float(loss) == pytest.approx(hand, rel=1e-6)
    assert float(general_kd_loss(s, s.clone())) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        general_kd_loss(s, t[:2])


# -- eq. 4 -------------------------------------------------------------------------------------
def test_region_masks_partition_and_cover_the_boundary(masks64: torch.Tensor) -> None:
    bound = boundary_pixels(masks64)
    assert bool(bound.flatten(1).any(dim=1).all())  # real lesions with a contour
    t0 = torch.zeros(4, dtype=torch.long)
    edge, body = efkd_region_masks(masks64, t0, T)
    assert edge.shape == body.shape == masks64.shape
    assert edge.dtype == body.dtype == torch.float32
    assert bool(((edge == 0) | (edge == 1)).all())
    assert torch.equal(edge + body, torch.ones_like(edge))
    assert bool((edge[bound] == 1).all())  # every boundary pixel is edge
    # At low noise the band is a real split: both regions are non-empty in every image.
    fraction = edge.mean(dim=(1, 2, 3))
    assert bool(((fraction > 0.05) & (fraction < 0.95)).all()), fraction
    # {-1, 1} masks (the diffusion x0) and a scalar t give the same split.
    edge_pm, _ = efkd_region_masks(masks64 * 2 - 1, 0, T)
    assert torch.equal(edge_pm, edge)
    with pytest.raises(ValueError, match="one timestep per image"):
        efkd_region_masks(masks64, torch.zeros(3), T)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        efkd_region_masks(masks64[:, 0], t0, T)


def test_edge_band_grows_with_t(masks64: torch.Tensor) -> None:
    counts = []
    for step in (0, 25, 60, 125, 249):
        edge, _ = efkd_region_masks(masks64, torch.full((4,), float(step)), T)
        counts.append(edge.sum(dim=(1, 2, 3)))
    counts = torch.stack(counts)  # (steps, B)
    assert bool((counts[1:] >= counts[:-1]).all()), counts
    assert bool((counts[-1] > counts[0]).all())
    # t -> T: W -> 1, all edge but the farthest pixel(s) from the contour (W = 0 ** e = 0).
    assert bool((counts[-1] >= 64 * 64 - 2).all()), counts[-1]
    # Per image in a batch with mixed timesteps: the same as per-image calls.
    mixed = torch.tensor([0.0, 60.0, 125.0, 249.0])
    together, _ = efkd_region_masks(masks64, mixed, T)
    for i in range(4):
        alone, _ = efkd_region_masks(masks64[i : i + 1], mixed[i : i + 1], T)
        assert torch.equal(together[i : i + 1], alone)


# -- eqs. 5-7 ----------------------------------------------------------------------------------
def test_efkd_loss_with_an_error_on_edge_pixels_only(masks64: torch.Tensor) -> None:
    edge, body = efkd_region_masks(masks64, torch.zeros(4), T)
    teacher = _randn(4, 1, 64, 64, seed=2)
    student = teacher + 0.3 * edge  # error 0.3 on every edge pixel, none on the body
    loss, logs = efkd_loss(student, teacher, edge, body)
    assert set(logs) == {"kd_edge", "kd_body", "edge_fraction"}
    assert logs["kd_edge"] == pytest.approx(0.09, rel=1e-5)
    assert logs["kd_body"] == 0.0
    assert logs["edge_fraction"] == pytest.approx(float(edge.mean()), rel=1e-6)
    assert float(loss) == pytest.approx(LAMBDA_EDGE * 0.09, rel=1e-5)
    # Custom weights, and the region masks may come with C channels too.
    loss2, _ = efkd_loss(student, teacher, edge, body, lambda_edge=1.0, lambda_body=7.0)
    assert float(loss2) == pytest.approx(0.09, rel=1e-5)
    two_s, two_t = student.repeat(1, 2, 1, 1), teacher.repeat(1, 2, 1, 1)
    loss3, _ = efkd_loss(two_s, two_t, edge.repeat(1, 2, 1, 1), body.repeat(1, 2, 1, 1))
    torch.testing.assert_close(loss3, loss)
    with pytest.raises(ValueError, match="edge must be"):
        efkd_loss(student, teacher, edge[:, :, :32], body)
    with pytest.raises(ValueError, match="differ in shape"):
        efkd_loss(student, teacher[:2], edge, body)


def test_efkd_loss_matches_a_per_image_hand_computation(masks64: torch.Tensor) -> None:
    """Region losses are normalised per image, then averaged; an empty region adds 0."""
    masks = masks64.clone()
    masks[3] = 0  # no lesion (e.g. an unlabelled image the teacher finds empty): W = 1
    edge, body = efkd_region_masks(masks, torch.tensor([0.0, 40.0, 90.0, 0.0]), T)
    assert float(body[3].sum()) == 0 and float(edge[3].sum()) == 64 * 64  # all edge
    student, teacher = _randn(4, 1, 64, 64, seed=3), _randn(4, 1, 64, 64, seed=4)
    loss, logs = efkd_loss(student, teacher, edge, body)
    sq = (student.double() - teacher.double()).numpy() ** 2
    e, b = edge.numpy().astype(bool), body.numpy().astype(bool)
    per_edge = [sq[i][e[i]].mean() if e[i].any() else 0.0 for i in range(4)]
    per_body = [sq[i][b[i]].mean() if b[i].any() else 0.0 for i in range(4)]
    hand_edge, hand_body = np.mean(per_edge), np.mean(per_body)
    assert per_body[3] == 0.0 and logs["kd_body"] == pytest.approx(hand_body, rel=1e-5)
    assert logs["kd_edge"] == pytest.approx(hand_edge, rel=1e-5)
    assert float(loss) == pytest.approx(5 * hand_edge + 2 * hand_body, rel=1e-5)
    # Not the pooled (batch-wide area) normalisation, where image 3 would not count at all.
    pooled_body = sq[b].mean()
    assert abs(pooled_body - hand_body) > 1e-3 * hand_body


def test_efkd_loss_does_not_depend_on_the_body_area(
    masks64: torch.Tensor, masks128: torch.Tensor
) -> None:
    edge, body = efkd_region_masks(masks64, torch.zeros(4), T)
    teacher = _randn(4, 1, 64, 64, seed=5)
    student = teacher + 0.3 * edge + 0.1 * body
    loss, logs = efkd_loss(student, teacher, edge, body)
    # Same edge pixels and errors, four times as much body (padded with body pixels).
    pad = (32, 32, 32, 32)
    edge_big = F.pad(edge, pad, value=0.0)
    body_big = F.pad(body, pad, value=1.0)
    teacher_big = F.pad(teacher, pad, value=0.0)
    student_big = teacher_big + 0.3 * edge_big + 0.1 * body_big
    loss_big, logs_big = efkd_loss(student_big, teacher_big, edge_big, body_big)
    assert logs_big["kd_edge"] == pytest.approx(logs["kd_edge"], rel=1e-5)
    assert logs_big["kd_body"] == pytest.approx(logs["kd_body"], rel=1e-5)
    assert float(loss_big) == pytest.approx(float(loss), rel=1e-5)
    assert logs_big["edge_fraction"] == pytest.approx(logs["edge_fraction"] / 4, rel=1e-5)
    # Whereas the plain MSE (eq. 2) is diluted by the extra body.
    assert float(general_kd_loss(student_big, teacher_big)) < 0.5 * float(
        general_kd_loss(student, teacher)
    )
    # The same masks at twice the resolution, same edge error: kd_edge unchanged.
    edge2, body2 = efkd_region_masks(masks128, torch.zeros(4), T)
    teacher2 = _randn(4, 1, 128, 128, seed=6)
    _, logs2 = efkd_loss(teacher2 + 0.3 * edge2, teacher2, edge2, body2)
    assert logs2["kd_edge"] == pytest.approx(logs["kd_edge"], rel=1e-5)
    assert logs2["kd_body"] == 0.0


def test_gradients_reach_the_student_only(masks64: torch.Tensor) -> None:
    edge, body = efkd_region_masks(masks64, torch.full((4,), 30.0), T)
    teacher = _randn(4, 1, 64, 64, seed=7).requires_grad_(True)
    student = _randn(4, 1, 64, 64, seed=8).requires_grad_(True)
    loss, _ = efkd_loss(student, teacher, edge, body)
    loss.backward()
    assert teacher.grad is None and student.grad is not None
    # d loss / d s = 2 (s - t) (lambda_e M_e / |M_e| + lambda_b M_b / |M_b|) / B, per image.
    n_e = edge.sum(dim=(1, 2, 3), keepdim=True)
    n_b = body.sum(dim=(1, 2, 3), keepdim=True)
    expected = 2 * (student - teacher).detach() * (5 * edge / n_e + 2 * body / n_b) / 4
    torch.testing.assert_close(student.grad, expected)
    s2 = student.detach().clone().requires_grad_(True)
    general_kd_loss(s2, teacher).backward()
    torch.testing.assert_close(s2.grad, 2 * (s2 - teacher).detach() / s2.numel())


def test_bf16_inputs_give_float32_losses(masks64: torch.Tensor) -> None:
    edge, body = efkd_region_masks(masks64, torch.zeros(4), T)
    student32, teacher32 = _randn(4, 1, 64, 64, seed=9), _randn(4, 1, 64, 64, seed=10)
    student = student32.bfloat16().requires_grad_(True)
    teacher = teacher32.bfloat16()
    loss, logs = efkd_loss(student, teacher, edge.bfloat16(), body.bfloat16())
    assert loss.dtype == torch.float32
    # Same value as the float32 computation on the (rounded) bf16 values.
    ref, _ = efkd_loss(student.detach().float(), teacher.float(), edge, body)
    torch.testing.assert_close(loss.detach(), ref)
    loss.backward()
    assert student.grad is not None and student.grad.dtype == torch.bfloat16
    assert bool(torch.isfinite(student.grad.float()).all())
    general = general_kd_loss(student, teacher)
    assert general.dtype == torch.float32
    torch.testing.assert_close(
        general.detach(), general_kd_loss(student.detach().float(), teacher.float())
    )
    assert isinstance(logs["kd_edge"], float) and isinstance(logs["edge_fraction"], float)


def test_edge_band_commutes_with_flips(ph2_pairs) -> None:
    """The trajectory objective computes edge bands once and flips them with the targets."""
    masks = torch.stack([(prepare_mask(read_image(m).data, 64) + 1) / 2
                         for _, m in ph2_pairs[:3]])
    for dims in ((-1,), (-2,)):
        edge_of_flip, _ = efkd_region_masks(masks.flip(dims), 0, T)
        flip_of_edge = efkd_region_masks(masks, 0, T)[0].flip(dims)
        assert torch.equal(edge_of_flip, flip_of_edge)


def test_spread_crps_is_lowest_for_samples_with_the_teachers_vote_fraction() -> None:
    """Per pixel, 4 samples with one lesion vote match a teacher vote fraction of 1/4 better
    than 4 identical soft samples of 1/4, or 4 agreeing ones; the value is the closed form."""
    from napari_lesion_diffkd.core.training.kd.kd_losses import spread_crps

    votes = torch.full((1, 1, 3, 3), 0.25)

    def samples(values):  # q in [0, 1] -> x0 in [-1, 1], (1, G, 1, 3, 3)
        return (torch.tensor(values).reshape(1, -1, 1, 1, 1).expand(1, len(values), 1, 3, 3)
                * 2 - 1)

    matching = spread_crps(samples([1.0, 0.0, 0.0, 0.0]), votes)
    soft_mean = spread_crps(samples([0.25] * 4), votes)
    all_off = spread_crps(samples([0.0] * 4), votes)
    all_on = spread_crps(samples([1.0] * 4), votes)
    assert float(matching) < float(soft_mean) < float(all_on)
    assert float(matching) < float(all_off)
    # Closed form: against the teacher 1/4 (0.75) + 3/4 (0.25) = 0.375; within: 6 of the 12
    # ordered pairs differ -> 0.5; CRPS = 0.375 - 0.25 = 0.125. All off: 0.25.
    assert float(matching) == pytest.approx(0.125)
    assert float(all_off) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="two samples"):
        spread_crps(samples([1.0]), votes)
