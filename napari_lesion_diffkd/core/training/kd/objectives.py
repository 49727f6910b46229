"""The distillation terms the trainer adds when a run has a ``teacher`` (issue 4).

Two recipes, chosen by the run's objective:

- ``"diffusion"`` + ``kd_method`` (seed 000, LiteDermoSegDiff): at the student's own (x_t, t, g)
  the frozen teacher predicts too; both predictions are converted to eps (so an x0 teacher can
  teach an eps student) and compared by eq. 2 (``general``) or eqs. 3-7 (``efkd``, edge/body
  split from the ground-truth mask's boundary weight at t). Added to the task loss and the
  boundary-aware loss, as in the seed.
- ``"trajectory"`` (the project's fast student): see ``trajectory.py``; the EFKD edge/body
  weighting is applied to the student's x0 error against the teacher's mask for the same
  noise, with the split taken from that teacher mask (t = 0: the thinnest band).
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_lesion_diffkd.core.diffusion.schedules import NoiseSchedule
from napari_lesion_diffkd.core.jobs import JobEvent

KD_METHODS = ("none", "general", "efkd")


class Distillation:
    """Frozen teacher + the KD loss terms of one run.

    Args:
        config: the run's ``TrainConfig`` (``teacher``, ``kd_*``, ``efkd_*``, ``trajectory_*``).
        schedule: the student's noise schedule.
        device: training device.
    """

    def __init__(self, config: Any, schedule: NoiseSchedule, device: torch.device) -> None:
        from napari_lesion_diffkd.core.registry import load_model

        if config.kd_method not in KD_METHODS:
            raise ValueError(f"unknown kd_method {config.kd_method!r}; one of {KD_METHODS}")
        if not config.teacher:
            raise ValueError(f"objective {config.objective!r} / kd_method {config.kd_method!r} "
                             "needs a teacher (--teacher NAME_OR_PATH)")
        self.config, self.schedule, self.device = config, schedule, device
        self.teacher = load_model(config.teacher, str(device))
        network = self.teacher.network.eval()
        for p in network.parameters():
            p.requires_grad_(False)
        size = int(self.teacher.config["input"]["size"])
        channels = int(self.teacher.config["input"]["channels"])
        if (size, channels) != (config.input_size, config.image_channels):
            raise ValueError(
                f"teacher {self.teacher.name!r} works at {size} px with {channels} channel(s); "
                f"the student config has input_size {config.input_size} and image_channels "
                f"{config.image_channels}: they must match"
            )
        if config.kd_method != "none" and config.objective != "diffusion":
            raise ValueError(f"kd_method {config.kd_method!r} distils eps at the student's own "
                             "(x_t, t): it needs objective 'diffusion', not "
                             f"{config.objective!r}")
        if config.objective == "diffusion" and config.kd_method != "none":
            if self.teacher.schedule.to_config() != schedule.to_config():
                raise ValueError(
                    "eps distillation compares predictions at the same x_t and t: the teacher's "
                    f"noise schedule {self.teacher.schedule.to_config()} must equal the "
                    f"student's {schedule.to_config()}"
                )
        self.targets: torch.Tensor | None = None  # (N, M, 1, S, S), trajectory only
        self.edges: torch.Tensor | None = None  # (N, M, 1, S, S) bool EFKD edge of each target

    # -- seed 000: eps KD at the student's (x_t, t) -----------------------------------------------
    def kd_term(
        self,
        student_output: torch.Tensor,
        student_target: str,
        x_t: torch.Tensor,
        t: torch.Tensor,
        images: torch.Tensor,
        masks: torch.Tensor,
    ) -> torch.Tensor:
        """``kd_weight`` x (eq. 2 or eq. 7) for one batch.

        Args:
            student_output: (B, 1, H, W) raw student output for ``student_target``.
            x_t: (B, 1, H, W) noisy masks; t: (B,) timesteps; images: (B, C, H, W);
            masks: (B, 1, H, W) ground truth in {-1, 1} (for the EFKD split).
        """
        from napari_lesion_diffkd.core.diffusion.targets import to_x0_and_eps
        from napari_lesion_diffkd.core.training.kd.kd_losses import (
            efkd_loss,
            efkd_region_masks,
            general_kd_loss,
        )

        c = self.config
        teacher = self.teacher.network
        with torch.no_grad():
            out_t = teacher(x_t, t.float(), images).float()
            heads = tuple(getattr(teacher, "output_targets", ()) or ())
            if len(heads) > 1:  # dual-head teacher (UniSegDiff): its eps head
                k = heads.index("epsilon")
                out_t, t_target = out_t[:, k : k + 1], "epsilon"
            else:
                t_target = self.teacher.prediction_target
            _, eps_t = to_x0_and_eps(t_target, out_t, x_t, t, self.schedule, False)
        _, eps_s = to_x0_and_eps(student_target, student_output.float(), x_t, t, self.schedule,
                                 False)
        if c.kd_method == "general":
            return c.kd_weight * general_kd_loss(eps_s, eps_t)
        edge, body = efkd_region_masks((masks + 1) / 2, t, self.schedule.num_timesteps,
                                       tau=c.efkd_tau)
        loss, _ = efkd_loss(eps_s, eps_t, edge, body, c.efkd_lambda_edge, c.efkd_lambda_body)
        return c.kd_weight * loss

    # -- the fast student: trajectory distillation -------------------------------------------------
    def prepare_targets(
        self, images: torch.Tensor, cache_dir: str | Path | None
    ) -> Generator[JobEvent, None, None]:
        """Compute (or reload) the teacher's masks for every training image and noise."""
        from napari_lesion_diffkd.core.training.kd.kd_losses import efkd_region_masks
        from napari_lesion_diffkd.core.training.kd.trajectory import compute_teacher_targets

        self.targets = yield from compute_teacher_targets(
            self.teacher, images, self.config.trajectory_noises, self.config.seed,
            cache_dir=cache_dir)
        # The targets never change: their EFKD edge bands (a distance transform each) are
        # computed once here, not in every step. Flips commute with them.
        n, m = self.targets.shape[:2]
        flat = (self.targets.flatten(0, 1) > 0).float()
        zero = torch.zeros(flat.shape[0])
        edges = [efkd_region_masks(flat[i : i + 64], zero[i : i + 64],
                                   self.schedule.num_timesteps, tau=self.config.efkd_tau)[0]
                 for i in range(0, flat.shape[0], 64)]
        self.edges = torch.cat(edges).bool().reshape(n, m, *flat.shape[1:])

    def trajectory_loss(
        self,
        network: nn.Module,
        images: torch.Tensor,
        masks: torch.Tensor,
        indices: list[int],
        generator: torch.Generator,
    ) -> torch.Tensor:
        """One batch of the trajectory objective.

        Args:
            network: the student (x0 prediction).
            images: (B, C, S, S) un-augmented training images of rows ``indices``.
            masks: (B, 1, S, S) their labels in {-1, 1}; an all-zero row marks an unlabelled
                image (teacher target only, no label term).
            indices: training-set index of each row (selects cached targets and seeds).
            generator: CPU generator (which noise per row, flips).
        """
        from napari_lesion_diffkd.core.training.kd.kd_losses import efkd_loss, spread_crps
        from napari_lesion_diffkd.core.training.kd.trajectory import (
            flip_consistently,
            trajectory_noise,
            trajectory_seed,
        )
        from napari_lesion_diffkd.core.training.objectives import segmentation_loss

        assert self.targets is not None, "prepare_targets() runs before training"
        c = self.config
        m_count = self.targets.shape[1]
        group = 1
        if c.trajectory_spread_weight > 0:
            # G rows per image with distinct noises, so the rows of one image form a sample set.
            group = max(1, min(int(c.trajectory_spread_samples), m_count, len(indices)))
            n_img = max(1, len(indices) // group)
            indices = [indices[r] for r in range(n_img) for _ in range(group)]
            images = images[:n_img].repeat_interleave(group, 0)
            masks = masks[:n_img].repeat_interleave(group, 0)
            which = torch.cat([torch.randperm(m_count, generator=generator)[:group]
                               for _ in range(n_img)]).tolist()
        else:
            which = torch.randint(0, m_count, (len(indices),), generator=generator).tolist()
        seeds = [trajectory_seed(c.seed, i, m, m_count) for i, m in zip(indices, which)]
        noise = trajectory_noise(seeds, tuple(masks.shape[1:]), images.device)
        target = torch.stack([self.targets[i, m] for i, m in zip(indices, which)]).to(
            images.device)
        edge = torch.stack([self.edges[i, m] for i, m in zip(indices, which)]).to(
            images.device, torch.float32)
        # The teacher's per-pixel vote fraction over all its cached masks of the row's image.
        votes = torch.stack([(self.targets[i] > 0).float().mean(0) for i in indices]).to(
            images.device)
        tensors = [images, noise, target, masks, edge, votes]
        if group > 1:
            # One flip per image (its G rows together), so its samples stay aligned.
            merged = [x.reshape(-1, group * x.shape[1], *x.shape[2:]) for x in tensors]
            merged = flip_consistently(merged, generator, vertical=c.vertical_flip)
            tensors = [m.reshape(x.shape) for m, x in zip(merged, tensors)]
        else:
            tensors = flip_consistently(tensors, generator, vertical=c.vertical_flip)
        images, noise, target, masks, edge, votes = tensors
        if c.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        top = torch.full((len(indices),), float(self.schedule.num_timesteps - 1),
                         device=images.device)
        x0 = network(noise, top, images).float()
        loss, _ = efkd_loss(x0, target, edge, 1 - edge, c.efkd_lambda_edge, c.efkd_lambda_body)
        if group > 1:
            loss = loss + c.trajectory_spread_weight * spread_crps(
                x0.reshape(-1, group, *x0.shape[1:]),
                votes.reshape(-1, group, *votes.shape[1:])[:, 0])
        labelled = masks.flatten(1).abs().amax(dim=1) > 0  # all-zero rows: unlabelled images
        if c.trajectory_gt_weight > 0 and bool(labelled.any()):
            # x0 in [-1, 1] as a logit of scale 4 (the staged objective's x0 head convention).
            # Scaled by the labelled share of the batch, so a labelled image weighs the same
            # however many unlabelled ones share its batch.
            share = labelled.float().mean()
            loss = loss + c.trajectory_gt_weight * share * segmentation_loss(
                4 * x0[labelled], (masks[labelled] + 1) / 2)
        return loss
