"""Training objectives as plain functions and small classes over explicit tensors.

Nothing here knows about the trainer: every loss takes the network (or its outputs), the
batch, the noise schedule and a ``torch.Generator`` and returns ``(loss, logs)`` with ``loss``
a scalar tensor to back-propagate and ``logs`` a ``dict[str, float]``.

Three families:

1. **UniSegDiff staged training** (seed 004 §2.2, eq. 1): :class:`StagedObjective` /
   :func:`staged_loss` for dual-head networks (``output_targets`` containing ``"epsilon"``
   and ``"x0"``, e.g. :class:`~napari_lesion_diffkd.core.networks.unisegdiff.UniSegDiffNet`).
   Reading of the seed, for T = 1000 (thresholds 600 / 300, Table 5):

   - *Rapid segmentation stage* ("high"), ``599 < t``: t is set to the maximum, ``T - 1 = 999``
     ("all time steps are set to the maximum value"); weights ``alpha : beta = 1 : 3``.
   - *Probabilistic modelling stage* ("middle"), ``299 < t <= 599``: t uniform on
     ``{300, ..., 599}``; both targets with equal weight, ``alpha : beta = 1 : 1``.
   - *Denoising refinement stage* ("low"), ``t <= 299``: t is set to the minimum, ``0``;
     ``alpha : beta = 3 : 1``.

   The thresholds scale with T exactly as in the staged sampler (``core/diffusion/staged.py``):
   ``t_high = round_half_up(600 T / 1000) - 1``, ``t_low = round_half_up(300 T / 1000) - 1``.

   Stage probabilities are *not* given in the paper. Our default reads the stages as a
   partition of the usual uniform draw of t (DDPM) followed by the stage's remapping of t, so a
   stage's probability is its share of the timesteps: ``(T-1-t_high, t_high-t_low, t_low+1) / T``
   = (0.4, 0.3, 0.3) at T = 1000 (:func:`default_stage_probs`). Pass ``stage_probs`` to change.

   Loss per example (eq. 1): ``alpha * L_n + beta * (L_dice + L_ce)`` with ``L_n`` the MSE of
   the eps head against the drawn noise, and Dice + binary cross-entropy of the x0 head against
   the mask. The paper gives only the ratios; we normalise ``alpha + beta = 1`` so every stage
   contributes on the same scale ((0.25, 0.75), (0.5, 0.5), (0.75, 0.25)). The x0 head lives on
   the mask's [-1, 1] scale; it is mapped to a probability by ``sigmoid(s * x0_hat)`` with
   ``s = x0_logit_scale`` (default 4: ``x0_hat = +-1`` gives p = 0.98 / 0.02; p > 0.5 exactly
   where the samplers' ``x0_hat > 0``). A smooth map is needed because the clamp
   ``(x0_hat + 1) / 2`` would give no gradient to a prediction beyond +-1 on the wrong side.

2. **Supervised segmentation** (:func:`segmentation_loss`): BCE + soft Dice on logits, for
   :class:`~napari_lesion_diffkd.core.networks.seg_unet.SegUNet` (the baseline and the
   UniSegDiff CFENet pre-training, seed 004 §2.3 / Fig. 1 (A)).

3. **LEAF** (seed 001 §2.1-2.2, eqs. 4-6): x0 prediction with an L1 loss
   (:func:`leaf_loss`, eq. 4, "the L1 loss as implemented in SDSeg") plus feature alignment of
   a denoiser feature map to a frozen vision encoder: an MLP projector
   (:class:`FeatureAligner`, 1x1 convs) maps the denoiser feature to the encoder's width on the
   encoder's grid, and :func:`alignment_loss` is ``1 - mean cosine similarity`` over positions
   (eq. 5 is ``-mean cos``; the constant 1 only makes the loss non-negative, 0 when aligned,
   2 when opposite). Total (eq. 6): ``L = L_x0 + lambda * L_align`` (:class:`LeafObjective`).
   The denoiser feature is read with a forward hook (:func:`capture_features`), so no network
   needs editing; the projector is training-only and dropped at inference (seed 001 §2.3).

   Encoder interface (:data:`FeatureEncoder`): any callable ``image (B, C, H, W) float32 ->
   feature map (B, D, h, w)``, called under ``torch.no_grad()``. The default is the project's
   own pre-trained :class:`SegUNet` at one level (:func:`segunet_feature_encoder`). A ViT such
   as DINOv2 or SAM plugs in the same way through a small wrapper that resizes/normalises the
   image as that model expects and reshapes its patch tokens (B, L, D) to (B, D, h, w) with
   ``h * w = L`` (drop class/register tokens); ``alignment_loss`` also accepts (B, L, D)
   tokens directly when the student is already on that grid.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from napari_lesion_diffkd.core.diffusion.schedules import NoiseSchedule
from napari_lesion_diffkd.core.diffusion.staged import staged_timesteps
from napari_lesion_diffkd.core.networks.seg_unet import SegUNet

#: Stage names, in the order used for stage indices (0, 1, 2).
STAGES: tuple[str, ...] = ("high", "middle", "low")
#: alpha : beta (eq. 1) per stage, seed 004 §2.2: 1:3 rapid segmentation, 1:1 probabilistic
#: modelling, 3:1 denoising refinement.
STAGE_WEIGHTS: dict[str, tuple[float, float]] = {
    "high": (1.0, 3.0),
    "middle": (1.0, 1.0),
    "low": (3.0, 1.0),
}
#: Stage thresholds in a 1000-step reference (seed 004 Table 5, best: 600 / 300).
DEFAULT_THRESHOLDS: tuple[int, int] = (600, 300)
REFERENCE_TIMESTEPS = 1000  # seed 004 §2.2 (t = 999 is the top)
#: lambda of eq. 6 (seed 001): 0.25 was best on ISIC2018 (dermoscopy) in its Table 3.
DEFAULT_LEAF_LAMBDA = 0.25

#: A frozen feature encoder for LEAF: image (B, C, H, W) -> features (B, D, h, w).
FeatureEncoder = Callable[[torch.Tensor], torch.Tensor]


# -- shared pieces ---------------------------------------------------------------------------------
def soft_dice_per_image(
    prob: torch.Tensor, target01: torch.Tensor, smooth: float = 1.0
) -> torch.Tensor:
    """``1 - soft Dice`` per image.

    Args:
        prob: (B, C, H, W) probabilities in [0, 1].
        target01: (B, C, H, W) masks in [0, 1].
        smooth: added to numerator and denominator (an empty mask predicted empty scores 0).

    Returns:
        (B,) float32 losses in [0, 1].
    """
    dims = tuple(range(1, prob.dim()))
    inter = (prob * target01).sum(dim=dims)
    total = prob.sum(dim=dims) + target01.sum(dim=dims)
    return 1 - (2 * inter + smooth) / (total + smooth)


def segmentation_loss(logits: torch.Tensor, masks01: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits + soft Dice for a supervised segmentation network (e.g. SegUNet).

    Args:
        logits: (B, 1, H, W) float32 logits.
        masks01: (B, 1, H, W) float32 masks in [0, 1] (1 = lesion).

    Returns:
        Scalar: mean pixel BCE + mean per-image ``1 - soft Dice``.
    """
    masks01 = masks01.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, masks01)
    dice = soft_dice_per_image(torch.sigmoid(logits), masks01).mean()
    return bce + dice


def network_head(
    network: Any, output: torch.Tensor, target: str, mask_channels: int
) -> torch.Tensor:
    """The channels of ``output`` that hold head ``target``.

    A network without ``output_targets`` is taken as a single-head network predicting
    ``target``.

    Raises:
        ValueError: the network has ``output_targets`` without ``target``.
    """
    heads = tuple(getattr(network, "output_targets", None) or (target,))
    if target not in heads:
        raise ValueError(f"network heads {heads} have no {target!r} head")
    i = heads.index(target)
    return output[:, i * mask_channels : (i + 1) * mask_channels]


# -- UniSegDiff staged training (seed 004 §2.2) ------------------------------------------------
@dataclass(frozen=True)
class StageBounds:
    """Timestep bounds of the three stages for a schedule of ``num_timesteps`` steps.

    Attributes:
        num_timesteps: T.
        top: ``T - 1``, the timestep of every high-stage example.
        t_high: largest middle-stage timestep (599 at T = 1000).
        t_low: largest low-stage timestep (299); middle stage is ``t_low < t <= t_high``.
    """

    num_timesteps: int
    top: int
    t_high: int
    t_low: int


def stage_bounds(
    num_timesteps: int,
    thresholds: tuple[int, int] = DEFAULT_THRESHOLDS,
    reference_timesteps: int = REFERENCE_TIMESTEPS,
) -> StageBounds:
    """Stage bounds scaled to T exactly like the staged sampler's (``staged_timesteps``).

    Raises:
        ValueError: thresholds out of order, or T too short to separate the stages.
    """
    high, low = (int(v) for v in thresholds)
    # stride = high - low: a single middle step, so the list is [top, t_high, t_low].
    steps = staged_timesteps(num_timesteps, high, low, high - low, reference_timesteps)
    return StageBounds(num_timesteps, steps[0], steps[1], steps[-1])


def default_stage_probs(bounds: StageBounds) -> tuple[float, float, float]:
    """Stage probabilities = each stage's share of ``{0, ..., T-1}`` (module docstring).

    Returns:
        ``(p_high, p_middle, p_low)``, (0.4, 0.3, 0.3) for T = 1000 and thresholds 600 / 300.
    """
    t = bounds.num_timesteps
    return (
        (bounds.top - bounds.t_high) / t,
        (bounds.t_high - bounds.t_low) / t,
        (bounds.t_low + 1) / t,
    )


def stage_of_timestep(t: torch.Tensor, bounds: StageBounds) -> torch.Tensor:
    """Stage index of timesteps (B,): 0 if ``t > t_high``, 1 if ``t_low < t <= t_high``, else 2."""
    t = t.long()
    return torch.where(t > bounds.t_high, 0, torch.where(t > bounds.t_low, 1, 2))


def sample_stages(
    batch: int, probs: Sequence[float], generator: torch.Generator
) -> torch.Tensor:
    """Draw a stage index per example (0 high, 1 middle, 2 low).

    Args:
        batch: B.
        probs: three non-negative stage probabilities (normalised here).
        generator: CPU generator for the draw.

    Returns:
        (B,) int64 stage indices.
    """
    p = torch.as_tensor([float(v) for v in probs], dtype=torch.float64)
    if p.numel() != 3 or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"stage_probs must be three non-negative numbers, got {list(probs)}")
    return torch.multinomial(p / p.sum(), batch, replacement=True, generator=generator)


def stage_timesteps(
    stages: torch.Tensor, bounds: StageBounds, generator: torch.Generator
) -> torch.Tensor:
    """Timesteps for stage indices (seed 004 §2.2).

    High stage: ``t = T - 1``; middle: ``t`` uniform on ``{t_low + 1, ..., t_high}``; low:
    ``t = 0``. A middle draw is made for every example (so the generator advances the same way
    whatever the stages are) and used only where the stage is middle.

    Args:
        stages: (B,) int64 stage indices.
        bounds: from :func:`stage_bounds`.
        generator: CPU generator.

    Returns:
        (B,) int64 timesteps.
    """
    middle = torch.randint(bounds.t_low + 1, bounds.t_high + 1, stages.shape, generator=generator)
    t = torch.where(stages == 0, torch.full_like(middle, bounds.top), middle)
    return torch.where(stages == 2, torch.zeros_like(middle), t)


class StagedObjective:
    """UniSegDiff staged loss (seed 004 §2.2, eq. 1) for dual-head (eps, x0) networks.

    Args:
        schedule: the training noise schedule (T steps).
        thresholds: ``(high, low)`` in the reference (600, 300; Table 5).
        reference_timesteps: T of the reference (1000).
        stage_probs: ``(p_high, p_middle, p_low)``; None: :func:`default_stage_probs`.
        stage_weights: ``{stage: (alpha, beta)}``; default :data:`STAGE_WEIGHTS`.
        normalize_weights: rescale each stage's pair to ``alpha + beta = 1``.
        x0_logit_scale: ``s`` in ``p = sigmoid(s * x0_hat)`` for the Dice + BCE of the x0 head.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        thresholds: tuple[int, int] = DEFAULT_THRESHOLDS,
        reference_timesteps: int = REFERENCE_TIMESTEPS,
        stage_probs: Sequence[float] | None = None,
        stage_weights: Mapping[str, tuple[float, float]] | None = None,
        normalize_weights: bool = True,
        x0_logit_scale: float = 4.0,
    ) -> None:
        self.schedule = schedule
        self.bounds = stage_bounds(schedule.num_timesteps, thresholds, reference_timesteps)
        if stage_probs is None:
            stage_probs = default_stage_probs(self.bounds)
        self.stage_probs = tuple(float(p) for p in stage_probs)
        weights = dict(STAGE_WEIGHTS if stage_weights is None else stage_weights)
        if set(weights) != set(STAGES):
            raise ValueError(f"stage_weights needs keys {STAGES}, got {sorted(weights)}")
        pairs = []
        for name in STAGES:
            alpha, beta = (float(v) for v in weights[name])
            if alpha < 0 or beta < 0 or alpha + beta <= 0:
                raise ValueError(f"bad (alpha, beta) for stage {name!r}: {weights[name]}")
            if normalize_weights:
                alpha, beta = alpha / (alpha + beta), beta / (alpha + beta)
            pairs.append((alpha, beta))
        #: (3, 2) float32: row = stage, columns alpha, beta.
        self.weights = torch.tensor(pairs, dtype=torch.float32)
        self.x0_logit_scale = float(x0_logit_scale)

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Stages (B,) int64 and their timesteps (B,) int64 (see :func:`stage_timesteps`)."""
        stages = sample_stages(batch, self.stage_probs, generator)
        return stages, stage_timesteps(stages, self.bounds, generator)

    def loss_from_outputs(
        self,
        eps_hat: torch.Tensor,
        x0_hat: torch.Tensor,
        noise: torch.Tensor,
        x0: torch.Tensor,
        stages: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Eq. 1 with per-example stage weights, from the two heads' outputs.

        Args:
            eps_hat, x0_hat: (B, C, H, W) eps and x0 head outputs.
            noise: (B, C, H, W) the noise used to form x_t.
            x0: (B, C, H, W) clean masks in [-1, 1].
            stages: (B,) int64 stage indices.

        Returns:
            ``(loss, logs)``; logs hold the batch means of ``loss``, ``mse_eps``, ``dice``,
            ``bce`` and the fraction of examples per stage (``frac_high`` ...).
        """
        dims = tuple(range(1, x0.dim()))
        mse = ((eps_hat.float() - noise) ** 2).mean(dim=dims)
        target01 = (x0 + 1) / 2
        logits = self.x0_logit_scale * x0_hat.float()
        bce = F.binary_cross_entropy_with_logits(logits, target01, reduction="none").mean(dim=dims)
        dice = soft_dice_per_image(torch.sigmoid(logits), target01)
        w = self.weights.to(x0.device)[stages]
        alpha, beta = w[:, 0], w[:, 1]
        per_example = alpha * mse + beta * (dice + bce)
        loss = per_example.mean()
        logs = {
            "loss": float(loss.detach()),
            "mse_eps": float(mse.detach().mean()),
            "dice": float(dice.detach().mean()),
            "bce": float(bce.detach().mean()),
        }
        for i, name in enumerate(STAGES):
            logs[f"frac_{name}"] = float((stages == i).float().mean())
        return loss, logs

    def __call__(
        self,
        network: Any,
        images_or_cond: Any,
        x0: torch.Tensor,
        generator: torch.Generator,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """One staged training loss.

        Args:
            network: ``(x_t, t, cond) -> output`` whose ``output_targets`` include
                ``"epsilon"`` and ``"x0"``.
            images_or_cond: the images (B, C, H, W) or the network's ``encode_condition``.
            x0: (B, C, H, W) clean masks in [-1, 1].
            generator: CPU generator for stages, timesteps and (if ``noise`` is None) noise.
            noise: optional (B, C, H, W) standard normal noise.

        Returns:
            ``(loss, logs)``, see :meth:`loss_from_outputs`; logs also hold ``t_mean``.
        """
        heads = tuple(getattr(network, "output_targets", None) or ())
        if "epsilon" not in heads or "x0" not in heads:
            raise ValueError(f"staged loss needs epsilon and x0 heads, network has {heads or None}")
        batch, channels = x0.shape[:2]
        stages, t = self.sample(batch, generator)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        t = t.to(x0.device)
        stages = stages.to(x0.device)
        x_t = self.schedule.add_noise(x0, noise, t)
        output = network(x_t, t.float(), images_or_cond)
        eps_hat = network_head(network, output, "epsilon", channels)
        x0_hat = network_head(network, output, "x0", channels)
        loss, logs = self.loss_from_outputs(eps_hat, x0_hat, noise, x0, stages)
        logs["t_mean"] = float(t.float().mean())
        return loss, logs


def staged_loss(
    network: Any,
    images_or_cond: Any,
    masks: torch.Tensor,
    schedule: NoiseSchedule,
    generator: torch.Generator,
    stage_probs: Sequence[float] | None = None,
    thresholds: tuple[int, int] = DEFAULT_THRESHOLDS,
    reference_timesteps: int = REFERENCE_TIMESTEPS,
    stage_weights: Mapping[str, tuple[float, float]] | None = None,
    x0_logit_scale: float = 4.0,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Functional form of :class:`StagedObjective` (seed 004 §2.2, eq. 1).

    Args:
        network: dual-head denoiser (``output_targets`` with ``"epsilon"`` and ``"x0"``).
        images_or_cond: images (B, C, H, W) or ``network.encode_condition(images)``.
        masks: (B, 1, H, W) clean masks x0 in [-1, 1].
        schedule: training noise schedule.
        generator: CPU generator (stages, timesteps, noise).
        stage_probs: ``(p_high, p_middle, p_low)``; None: proportional to stage lengths.
        thresholds: ``(600, 300)`` in a ``reference_timesteps`` = 1000 reference, scaled to T.
        stage_weights: ``{stage: (alpha, beta)}``, normalised to sum 1 per stage.
        x0_logit_scale: probability map of the x0 head, ``sigmoid(s * x0_hat)``.
        noise: optional fixed noise (B, 1, H, W).

    Returns:
        ``(loss, logs)``: scalar loss and ``dict[str, float]``.
    """
    objective = StagedObjective(
        schedule,
        thresholds=thresholds,
        reference_timesteps=reference_timesteps,
        stage_probs=stage_probs,
        stage_weights=stage_weights,
        x0_logit_scale=x0_logit_scale,
    )
    return objective(network, images_or_cond, masks, generator, noise=noise)


# -- LEAF (seed 001 §2.1-2.2) ------------------------------------------------------------------
def leaf_loss(x0_pred: torch.Tensor, x0_true: torch.Tensor) -> torch.Tensor:
    """x0-prediction loss of LEAF / SDSeg: mean absolute error (seed 001 eq. 4).

    Args:
        x0_pred, x0_true: (B, C, H, W) float32 on the same scale ([-1, 1] masks here).
    """
    return F.l1_loss(x0_pred.float(), x0_true.float())


def alignment_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``1 - mean cosine similarity`` over positions (seed 001 eq. 5, shifted by 1).

    Args:
        student: projected denoiser features, (B, D, h, w) feature maps or (B, L, D) tokens.
        teacher: frozen encoder features, same shape.

    Returns:
        Scalar in [0, 2]: 0 when aligned everywhere, 2 when opposite everywhere.
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ"
        )
    if student.dim() == 4:
        dim = 1
    elif student.dim() == 3:
        dim = -1
    else:
        raise ValueError(f"need (B, D, h, w) maps or (B, L, D) tokens, got {tuple(student.shape)}")
    cos = F.cosine_similarity(student.float(), teacher.float(), dim=dim, eps=1e-8)
    return 1 - cos.mean()


class FeatureAligner(nn.Module):
    """LEAF's MLP projector ``phi`` (seed 001 §2.2) as 1x1 convs, plus resizing to a grid.

    ``num_layers`` 1x1 convs with SiLU between them (REPA uses a 3-layer MLP). Applied to the
    denoiser feature at its own resolution, then resized to the teacher's grid (area averaging
    when shrinking, bilinear when enlarging), so that ``HW = L`` as eq. 5 requires.

    Args:
        in_channels: channels C of the denoiser feature map.
        out_channels: the encoder's feature dimension D.
        hidden_channels: width of the hidden layers.
        num_layers: number of 1x1 convs (>= 1).
    """

    def __init__(
        self, in_channels: int, out_channels: int, hidden_channels: int = 256, num_layers: int = 3
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.config = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "hidden_channels": hidden_channels,
            "num_layers": num_layers,
        }
        layers: list[nn.Module] = []
        width = in_channels
        for i in range(num_layers):
            last = i == num_layers - 1
            layers.append(nn.Conv2d(width, out_channels if last else hidden_channels, 1))
            if not last:
                layers.append(nn.SiLU())
                width = hidden_channels
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Project (B, C, h, w) features to (B, D, *size) (``size`` None: keep h, w)."""
        out = self.mlp(features)
        if size is None or tuple(out.shape[-2:]) == tuple(size):
            return out
        size = (int(size[0]), int(size[1]))
        if size[0] <= out.shape[-2] and size[1] <= out.shape[-1]:
            return F.interpolate(out, size=size, mode="area")
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)


class FeatureCapture(dict):
    """Holder filled by :func:`capture_features`: ``{"features": latest output}``.

    A dict (key ``"features"``, absent until the module runs) with a :attr:`value` property.
    """

    def __init__(self, module_name: str) -> None:
        super().__init__()
        self.module_name = module_name

    @property
    def value(self) -> torch.Tensor:
        """The captured tensor (with its autograd graph); raises if the module did not run."""
        if "features" not in self:
            raise RuntimeError(f"module {self.module_name!r} has not run inside capture_features")
        return self["features"]


@contextlib.contextmanager
def capture_features(network: nn.Module, module_name: str) -> Iterator[FeatureCapture]:
    """Record the output of ``network``'s submodule ``module_name`` with a forward hook.

    The tensor keeps its graph (needed for the alignment gradient); for modules returning a
    tuple the first element is kept; if the module runs more than once the last output wins.
    The hook is removed on exit. Example (for ``CondDiffusionUNet``)::

        with capture_features(net, "mid") as cap:
            out = net(x_t, t, image)
        feat = cap.value  # (B, C_mid, h, w)

    Raises:
        KeyError: no submodule of that name (the message lists a few valid names).
    """
    modules = dict(network.named_modules())
    if module_name not in modules:
        names = [n for n in modules if n][:12]
        raise KeyError(f"no submodule {module_name!r}; some valid names: {names}")
    capture = FeatureCapture(module_name)

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        capture["features"] = output[0] if isinstance(output, (tuple, list)) else output

    handle = modules[module_name].register_forward_hook(hook)
    try:
        yield capture
    finally:
        handle.remove()


class FrozenFeatureEncoder(nn.Module):
    """A frozen :class:`SegUNet` as a LEAF teacher: image -> ``features(image)[index]``.

    Args:
        seg_unet: a pre-trained SegUNet; frozen in place (no gradients, eval mode).
        index: entry of :meth:`SegUNet.features` (encoder levels ``0..L-1``, then decoder levels
            ``L..2L-1``; negative counts from the end); None: ``-1``, the deepest decoder level
            (the bottleneck fused with the deepest skip): the end of the network's low-resolution
            processing, the closest analogue of a vision encoder's final patch tokens (and what
            the trainer's LEAF option uses, ``features(images)[-1]``).
    """

    def __init__(self, seg_unet: SegUNet, index: int | None = None) -> None:
        super().__init__()
        self.net = seg_unet
        n = len(seg_unet.feature_channels)
        self.index = (n - 1) if index is None else int(index) % n
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.net.eval()

    @property
    def out_channels(self) -> int:
        """Feature dimension D of the output."""
        return self.net.feature_channels[self.index]

    @property
    def stride(self) -> int:
        """Downsampling of the output grid relative to the image."""
        return self.net.feature_strides[self.index]

    def train(self, mode: bool = True) -> FrozenFeatureEncoder:
        """Always stays in eval mode."""
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, out_channels, H / stride, W / stride), no gradient."""
        return self.net.features(image)[self.index]


def segunet_feature_encoder(seg_unet: SegUNet, index: int | None = None) -> FrozenFeatureEncoder:
    """The default LEAF encoder: a frozen pre-trained SegUNet at one feature level."""
    return FrozenFeatureEncoder(seg_unet, index)


class LeafObjective(nn.Module):
    """LEAF training loss ``L = L1(x0_hat, x0) + lambda * L_align`` (seed 001 eqs. 4-6).

    The module's parameters are the projector's only (add them to the optimizer next to the
    denoiser's); the encoder is held without registration, so it is neither trained nor saved
    with this module.

    Args:
        encoder: frozen :data:`FeatureEncoder` (e.g. :func:`segunet_feature_encoder`).
        student_module: name of the denoiser submodule whose output is aligned (e.g. ``"mid"``
            or ``"enc_blocks.3"`` for ``CondDiffusionUNet``).
        student_channels: channels of that module's output.
        teacher_channels: the encoder's feature dimension D.
        lambda_align: lambda of eq. 6 (default 0.25, seed 001 Table 3 on ISIC2018).
        hidden_channels, num_layers: projector size (:class:`FeatureAligner`).
    """

    def __init__(
        self,
        encoder: FeatureEncoder,
        student_module: str,
        student_channels: int,
        teacher_channels: int,
        lambda_align: float = DEFAULT_LEAF_LAMBDA,
        hidden_channels: int = 256,
        num_layers: int = 3,
    ) -> None:
        super().__init__()
        self.__dict__["encoder"] = encoder  # not a registered submodule: frozen, not saved
        self.student_module = student_module
        self.lambda_align = float(lambda_align)
        self.aligner = FeatureAligner(
            student_channels, teacher_channels, hidden_channels, num_layers
        )

    def forward(  # type: ignore[override]
        self,
        network: nn.Module,
        images: torch.Tensor,
        x0: torch.Tensor,
        schedule: NoiseSchedule,
        generator: torch.Generator,
        noise: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
        cond: Any = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """One LEAF loss for an x0-predicting denoiser.

        Args:
            network: ``(x_t, t, cond) -> output`` predicting x0 (or with an ``"x0"`` head).
            images: (B, C, H, W) images (the teacher's input; also the condition unless
                ``cond`` is given).
            x0: (B, 1, H, W) clean masks in [-1, 1].
            schedule: training noise schedule.
            generator: CPU generator for t (uniform on ``{0..T-1}``) and noise.
            noise, timesteps: optional fixed noise (like x0) and timesteps (B,).
            cond: optional precomputed condition for the network.

        Returns:
            ``(loss, logs)`` with ``loss``, ``l_x0`` and ``l_align`` (floats).
        """
        batch, channels = x0.shape[:2]
        if timesteps is None:
            timesteps = torch.randint(0, schedule.num_timesteps, (batch,), generator=generator)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator)
        t = timesteps.to(x0.device)
        x_t = schedule.add_noise(x0, noise.to(x0.device), t)
        with torch.no_grad():
            teacher = self.encoder(images)
        with capture_features(network, self.student_module) as cap:
            output = network(x_t, t.float(), images if cond is None else cond)
        x0_hat = network_head(network, output, "x0", channels)
        l_x0 = leaf_loss(x0_hat, x0)
        student = self.aligner(cap.value, tuple(teacher.shape[-2:]))
        l_align = alignment_loss(student, teacher.detach())
        loss = l_x0 + self.lambda_align * l_align
        logs = {
            "loss": float(loss.detach()),
            "l_x0": float(l_x0.detach()),
            "l_align": float(l_align.detach()),
        }
        return loss, logs
