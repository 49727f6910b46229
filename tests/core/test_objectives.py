"""Tests of the training objectives (``core/training/objectives.py``).

Staged (UniSegDiff, seed 004 §2.2) stage sampling and weighting, LEAF (seed 001 eqs. 4-6)
alignment and hooks, and the supervised segmentation loss on real PH2 masks. Networks are
tiny; the module runs in seconds on one CPU thread.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from napari_lesion_diffkd.core.diffusion.schedules import NoiseSchedule
from napari_lesion_diffkd.core.diffusion.staged import staged_timesteps
from napari_lesion_diffkd.core.networks.cond_unet import CondDiffusionUNet
from napari_lesion_diffkd.core.networks.seg_unet import SegUNet
from napari_lesion_diffkd.core.networks.unisegdiff import UniSegDiffNet
from napari_lesion_diffkd.core.training.objectives import (
    STAGE_WEIGHTS,
    FeatureAligner,
    LeafObjective,
    StagedObjective,
    alignment_loss,
    capture_features,
    default_stage_probs,
    leaf_loss,
    sample_stages,
    segmentation_loss,
    segunet_feature_encoder,
    soft_dice_per_image,
    stage_bounds,
    stage_of_timestep,
    staged_loss,
)

SCHEDULE = NoiseSchedule("cosine", 1000)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_masks(batch: int, size: int, seed: int) -> torch.Tensor:
    """(B, 1, size, size) masks in {-1, 1}: a random disc per image."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = []
    for _ in range(batch):
        cy, cx = torch.randint(size // 4, 3 * size // 4, (2,), generator=gen).tolist()
        r = int(torch.randint(size // 8, size // 3, (1,), generator=gen))
        out.append(((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).float() * 2 - 1)
    return torch.stack(out)[:, None]


class ConstantHeads(nn.Module):
    """Dual-head 'network' whose eps and x0 heads are learnable constants; records its inputs."""

    output_targets = ("epsilon", "x0")

    def __init__(self, eps_value: float, x0_value: float) -> None:
        super().__init__()
        self.eps_value = nn.Parameter(torch.tensor(eps_value))
        self.x0_value = nn.Parameter(torch.tensor(x0_value))
        self.seen_t: torch.Tensor | None = None

    def forward(self, x_t, t, cond):
        self.seen_t = t.clone()
        ones = torch.ones_like(x_t)
        return torch.cat([self.eps_value * ones, self.x0_value * ones], dim=1)


# -- staged (seed 004) -----------------------------------------------------------------------------
def test_stage_bounds_match_staged_sampler():
    b = stage_bounds(1000)
    assert (b.top, b.t_high, b.t_low) == (999, 599, 299)
    assert default_stage_probs(b) == pytest.approx((0.4, 0.3, 0.3))
    for T in (250, 1000, 100):
        b = stage_bounds(T)
        steps = staged_timesteps(T)
        assert (b.top, b.t_high, b.t_low) == (steps[0], steps[1], steps[-1])
        assert sum(default_stage_probs(b)) == pytest.approx(1.0)
    t = torch.tensor([999, 600, 599, 300, 299, 0])
    assert stage_of_timestep(t, stage_bounds(1000)).tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError):
        stage_bounds(1000, thresholds=(300, 600))


def test_stage_frequencies_and_timesteps():
    objective = StagedObjective(SCHEDULE)
    gen = torch.Generator().manual_seed(123)
    stages, t = objective.sample(20000, gen)
    freq = torch.bincount(stages, minlength=3).float() / stages.numel()
    assert freq.tolist() == pytest.approx([0.4, 0.3, 0.3], abs=0.015)
    assert (t[stages == 0] == 999).all()  # high stage: t set to the top
    assert (t[stages == 2] == 0).all()  # low stage: t set to 0
    mid = t[stages == 1]
    assert mid.min() == 300 and mid.max() == 599  # 299 < t <= 599, uniform
    assert float(mid.float().mean()) == pytest.approx(449.5, abs=3.0)
    assert (stage_of_timestep(t, objective.bounds) == stages).all()
    # same generator seed, same draw
    again = StagedObjective(SCHEDULE).sample(20000, torch.Generator().manual_seed(123))
    assert torch.equal(again[0], stages) and torch.equal(again[1], t)
    custom = sample_stages(10000, (0.0, 1.0, 3.0), torch.Generator().manual_seed(0))
    assert (custom != 0).all()
    assert float((custom == 2).float().mean()) == pytest.approx(0.75, abs=0.02)
    with pytest.raises(ValueError):
        sample_stages(4, (1.0, -1.0, 0.0), gen)


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_per_stage_alpha_beta(stage):
    eps_value, x0_value, scale = 0.3, 0.5, 4.0
    net = ConstantHeads(eps_value, x0_value)
    x0 = random_masks(3, 16, seed=stage)
    noise = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(9))
    probs = [0.0, 0.0, 0.0]
    probs[stage] = 1.0
    loss, logs = staged_loss(
        net, torch.zeros(3, 3, 16, 16), x0, SCHEDULE, torch.Generator().manual_seed(0),
        stage_probs=probs, noise=noise,
    )
    seen = net.seen_t
    assert seen is not None
    if stage == 0:
        assert (seen == 999).all()
    elif stage == 1:
        assert ((seen >= 300) & (seen <= 599)).all()
    else:
        assert (seen == 0).all()
    # Expected value computed independently.
    mse = ((eps_value - noise) ** 2).mean(dim=(1, 2, 3))
    target01 = (x0 + 1) / 2
    p = torch.sigmoid(torch.tensor(scale * x0_value))
    bce = -(target01 * torch.log(p) + (1 - target01) * torch.log(1 - p)).mean(dim=(1, 2, 3))
    inter = (p * target01).sum(dim=(1, 2, 3))
    dice = 1 - (2 * inter + 1) / (p * 256 + target01.sum(dim=(1, 2, 3)) + 1)
    alpha, beta = STAGE_WEIGHTS[("high", "middle", "low")[stage]]
    alpha, beta = alpha / (alpha + beta), beta / (alpha + beta)
    expected = (alpha * mse + beta * (dice + bce)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert logs["mse_eps"] == pytest.approx(float(mse.mean()), rel=1e-5)
    assert logs[f"frac_{('high', 'middle', 'low')[stage]}"] == 1.0
    # ratio alpha : beta as in the seed: 1:3, 1:1, 3:1
    assert alpha / beta == pytest.approx((1 / 3, 1.0, 3.0)[stage])


def test_mixed_stages_weighted_per_example():
    objective = StagedObjective(SCHEDULE)
    x0 = random_masks(3, 8, seed=1)
    noise = torch.zeros_like(x0)
    eps_hat = torch.ones_like(x0)  # mse = 1 for every example
    x0_hat = x0 * 10  # nearly perfect x0: seg loss ~ 0
    stages = torch.tensor([0, 1, 2])
    loss, _ = objective.loss_from_outputs(eps_hat, x0_hat, noise, x0, stages)
    target01 = (x0 + 1) / 2
    bce = F.binary_cross_entropy_with_logits(4 * x0_hat, target01, reduction="none")
    seg = soft_dice_per_image(torch.sigmoid(4 * x0_hat), target01) + bce.mean(dim=(1, 2, 3))
    expected = ((0.25 + 0.5 + 0.75) + (0.75 * seg[0] + 0.5 * seg[1] + 0.25 * seg[2])) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # unnormalised weights (the raw ratios) are available too
    raw = StagedObjective(SCHEDULE, normalize_weights=False)
    assert raw.weights.tolist() == [[1.0, 3.0], [1.0, 1.0], [3.0, 1.0]]


def test_staged_gradients_reach_only_the_denoiser():
    torch.manual_seed(0)
    net = UniSegDiffNet(
        condition_network={"base_channels": 8, "channel_mults": [1, 2, 2, 2]},
        base_channels=8,
        channel_mults=[1, 1, 2, 2],
        attention_heads=2,
    ).train()
    image = torch.randn(4, 3, 32, 32)
    masks = random_masks(4, 32, seed=3)
    loss, logs = staged_loss(net, image, masks, SCHEDULE, torch.Generator().manual_seed(5))
    assert torch.isfinite(loss) and set(logs) >= {"loss", "mse_eps", "dice", "bce", "t_mean"}
    loss.backward()
    assert all(p.grad is None for p in net.condition.parameters())
    for part in (net.stem, net.enc_blocks, net.mid, net.eps_decoder, net.x0_decoder):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads)
        assert any(float(g.abs().sum()) > 0 for g in grads)
    # A precomputed condition gives the same loss (same generator draws).
    cond = net.encode_condition(image)
    again, _ = staged_loss(net, cond, masks, SCHEDULE, torch.Generator().manual_seed(5))
    assert again.item() == pytest.approx(loss.item(), rel=1e-5)


def test_staged_loss_needs_both_heads():
    single = CondDiffusionUNet(image_channels=3, base_channels=8, image_base_channels=8)
    with pytest.raises(ValueError, match="epsilon and x0"):
        staged_loss(
            single, torch.zeros(1, 3, 16, 16), torch.ones(1, 1, 16, 16), SCHEDULE, torch.Generator()
        )


# -- LEAF (seed 001) -------------------------------------------------------------------------------
def test_alignment_loss_identical_and_opposite():
    feats = torch.randn(2, 16, 4, 4)
    assert float(alignment_loss(feats, feats)) == pytest.approx(0.0, abs=1e-6)
    assert float(alignment_loss(feats, -feats)) == pytest.approx(2.0, abs=1e-6)
    assert float(alignment_loss(feats, 3.0 * feats)) == pytest.approx(0.0, abs=1e-6)  # scale-free
    tokens = torch.randn(2, 9, 16)
    assert float(alignment_loss(tokens, -tokens)) == pytest.approx(2.0, abs=1e-6)
    aligner = FeatureAligner(8, 16, hidden_channels=32)
    projected = aligner(torch.randn(2, 8, 8, 8), (4, 4))
    assert projected.shape == (2, 16, 4, 4)
    assert aligner(torch.randn(2, 8, 2, 2), (4, 4)).shape == (2, 16, 4, 4)  # upsampling
    assert alignment_loss(projected, projected.detach()).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        alignment_loss(projected, torch.randn(2, 16, 2, 2))


def test_alignment_loss_decreases_with_training():
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(4, 8, 8, 8, generator=gen)
    mixing = torch.randn(16, 8, generator=gen)
    teacher = torch.einsum("dc,bchw->bdhw", mixing, F.avg_pool2d(student, 2)).tanh()
    torch.manual_seed(0)
    aligner = FeatureAligner(8, 16, hidden_channels=32)
    opt = torch.optim.Adam(aligner.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = alignment_loss(aligner(student, (4, 4)), teacher)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_capture_features_returns_hooked_tensor():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    x = torch.randn(1, 1, 8, 8)
    with capture_features(seq, "1") as cap:
        seq(x)
    assert torch.equal(cap.value, F.relu(seq[0](x)))
    assert cap.get("features") is cap.value  # also a dict {"features": tensor} (trainer)
    assert cap.value.requires_grad  # graph kept for the alignment gradient
    assert len(seq[1]._forward_hooks) == 0  # removed on exit
    with pytest.raises(KeyError, match="no submodule"):
        with capture_features(seq, "nope"):
            pass
    with capture_features(seq, "2") as unused:
        pass
    with pytest.raises(RuntimeError):
        _ = unused.value
    net = CondDiffusionUNet(image_channels=3, base_channels=8, image_base_channels=8, stem_stride=2)
    with capture_features(net, "mid") as cap:
        net(torch.randn(2, 1, 32, 32), torch.tensor([1.0, 2.0]), torch.randn(2, 3, 32, 32))
    assert cap.value.shape == (2, 32, 2, 2)  # widths 8 * 4 at stride 2 * 8


def test_leaf_objective_trains_and_teacher_stays_frozen():
    torch.manual_seed(0)
    teacher_net = SegUNet(base_channels=8, channel_mults=(1, 2, 4, 4))
    encoder = segunet_feature_encoder(teacher_net)  # deepest decoder level: 32 ch at stride 16
    assert (encoder.out_channels, encoder.stride) == (32, 16)
    teacher_before = {k: v.clone() for k, v in teacher_net.state_dict().items()}
    net = CondDiffusionUNet(image_channels=3, base_channels=8, image_base_channels=8, stem_stride=2)
    objective = LeafObjective(
        encoder, "mid", student_channels=32, teacher_channels=32, hidden_channels=32
    )
    assert not any(k.startswith("encoder") for k in objective.state_dict())  # projector only
    params = list(net.parameters()) + list(objective.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    x0 = random_masks(2, 32, seed=2)
    noise = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([100, 400])
    losses = []
    for _ in range(8):
        loss, logs = objective(
            net, image, x0, SCHEDULE, torch.Generator(), noise=noise, timesteps=t
        )
        assert logs["loss"] == pytest.approx(logs["l_x0"] + 0.25 * logs["l_align"], rel=1e-5)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in objective.aligner.parameters())
        assert all(p.grad is None for p in teacher_net.parameters())
        opt.step()
        losses.append(logs)
    assert losses[-1]["loss"] < losses[0]["loss"]
    assert losses[-1]["l_align"] < losses[0]["l_align"]
    for k, v in teacher_net.state_dict().items():
        assert torch.equal(v, teacher_before[k])
    assert float(leaf_loss(x0, x0)) == 0.0 and float(leaf_loss(x0, -x0)) == 2.0


# -- supervised segmentation -----------------------------------------------------------------------
def test_segmentation_loss_prefers_true_mask_on_ph2(ph2_pairs):
    masks = []
    for _, mask_path in ph2_pairs[:4]:
        m = Image.open(mask_path).convert("L").resize((64, 64), Image.NEAREST)
        masks.append(torch.from_numpy((np.asarray(m) > 127).astype(np.float32)))
    masks01 = torch.stack(masks)[:, None]
    assert 0.02 < float(masks01.mean()) < 0.98
    true_logits = 6.0 * (2 * masks01 - 1)
    shifted_logits = torch.roll(true_logits, shifts=(16, 16), dims=(2, 3))
    good = float(segmentation_loss(true_logits, masks01))
    bad = float(segmentation_loss(shifted_logits, masks01))
    assert good < 0.05 < bad
    assert good < float(segmentation_loss(torch.zeros_like(true_logits), masks01))
    # gradients reach a SegUNet
    net = SegUNet(base_channels=8, channel_mults=(1, 2, 4, 4))
    loss = segmentation_loss(net(torch.randn(4, 3, 64, 64)), masks01)
    loss.backward()
    assert net.stem.weight.grad is not None
