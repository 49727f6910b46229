"""A small unconditional image-diffusion generator (seed 002 §3.2's transfer-set generator).

Seed 002 enlarges its KD transfer set with images from a diffusion model trained on the
labelled images (forward noising ``q(x_t | x_{t-1})``, learned reverse ``p(x_{t-1} | x_t)``,
its eqs. 1-2; it uses a Swin-transformer denoiser). Here, for CPU budgets, a small
convolutional UNet at 64 x 64 px does the denoising; everything else is the project's own
diffusion code: ``NoiseSchedule`` (cosine by default), the ``v`` prediction target and its
exact conversions (``targets.py``), and the DDIM update (``sampling_common.ddim_coefficients``,
``ddim.ddim_timesteps``).

Images: (N, 3, R, R) uint8 RGB at the generator's resolution R; the network works on
``x / 127.5 - 1`` in [-1, 1]. Images of other sizes are resized (aspect ratio not kept: the
caller stores the typical shape and resizes generated images back to it).

Three objects, as elsewhere in ``core/diffusion``: the network (:class:`ImageUNet`,
``forward(x_t, t)``), the schedule, and the loops :func:`train_image_generator` and
:func:`sample_images`, generators of :class:`JobEvent`. :func:`save_generator` /
:func:`load_generator` write ``config.json`` + ``model.safetensors`` (no pickle).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from napari_lesion_diffkd import __version__
from napari_lesion_diffkd.core.data.writers import atomic_write_bytes
from napari_lesion_diffkd.core.diffusion.ddim import ddim_timesteps
from napari_lesion_diffkd.core.diffusion.sampling_common import ddim_coefficients
from napari_lesion_diffkd.core.diffusion.schedules import NoiseSchedule
from napari_lesion_diffkd.core.diffusion.targets import to_x0_and_eps, training_target
from napari_lesion_diffkd.core.jobs import JobEvent
from napari_lesion_diffkd.core.networks.blocks import ResBlock, group_norm, timestep_embedding

KIND = "image-generator"


@dataclass
class ImageGeneratorConfig:
    """Network, schedule and training settings (YAML/JSON keys = attribute names).

    Attributes:
        resolution: R, generated images are R x R. base_channels, channel_mults: UNet
            widths per level (len(channel_mults) - 1 downsamplings).
        schedule, num_timesteps: noise schedule (``NoiseSchedule`` kind) and T.
        target: prediction target (``"v"``, ``"epsilon"`` or ``"x0"``).
        batch_size, lr, steps, minutes: AdamW; stop at whichever of steps / minutes first.
        ema_decay: EMA of the weights used for sampling (0: the raw weights).
        vertical_flips: also flip up/down (dermoscopy has no fixed orientation).
        sample_steps, eta: DDIM sampling (eta 0: deterministic given the noise).
        amp_bf16: bf16 autocast in training (about 2x faster on this CPU); sampling is fp32.
        seed: initialisation, batches, noise.
    """

    resolution: int = 64
    base_channels: int = 16
    channel_mults: tuple[int, ...] = (1, 2, 4, 8)
    schedule: str = "cosine"
    num_timesteps: int = 1000
    target: str = "v"
    batch_size: int = 16
    lr: float = 5e-4
    steps: int = 2000
    minutes: float | None = None
    ema_decay: float = 0.995
    vertical_flips: bool = True
    sample_steps: int = 25
    eta: float = 0.0
    amp_bf16: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        self.channel_mults = tuple(int(m) for m in self.channel_mults)
        if self.resolution % (2 ** (len(self.channel_mults) - 1)):
            raise ValueError(f"resolution {self.resolution} not divisible by "
                             f"2^{len(self.channel_mults) - 1}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageGeneratorConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown image generator keys {unknown}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        return d

    def network_kwargs(self) -> dict[str, Any]:
        return {"base_channels": self.base_channels, "channel_mults": list(self.channel_mults)}

    def make_schedule(self) -> NoiseSchedule:
        return NoiseSchedule(self.schedule, self.num_timesteps)  # type: ignore[arg-type]


class ImageUNet(nn.Module):
    """Unconditional denoising UNet: ``forward(x_t (B, 3, R, R), t (B,)) -> (B, 3, R, R)``.

    One FiLM residual block per level on each way (the upward one after concatenating the
    skip), nearest-neighbour upsampling, strided-conv downsampling. Narrow at full
    resolution and wider below it, where a channel costs a quarter as much per level.
    """

    def __init__(self, base_channels: int = 16, channel_mults: tuple[int, ...] | list[int] = (
            1, 2, 4, 8), in_channels: int = 3) -> None:
        super().__init__()
        chans = [base_channels * m for m in channel_mults]
        self.base_channels = base_channels
        emb = 4 * base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb), nn.SiLU(),
                                      nn.Linear(emb, emb))
        self.stem = nn.Conv2d(in_channels, chans[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i, c in enumerate(chans):
            prev = chans[i - 1] if i else chans[0]
            self.down.append(ResBlock(prev, c, emb))
            self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1)
                                   if i < len(chans) - 1 else nn.Identity())
        self.mid = ResBlock(chans[-1], chans[-1], emb)
        self.up = nn.ModuleList()
        for i in reversed(range(len(chans))):
            above = chans[i + 1] if i < len(chans) - 1 else chans[-1]
            self.up.append(ResBlock(above + chans[i], chans[i], emb))
        self.out = nn.Sequential(group_norm(chans[0]), nn.SiLU(),
                                 nn.Conv2d(chans[0], in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.base_channels))
        h = self.stem(x)
        skips = []
        for block, down in zip(self.down, self.downsample):
            h = block(h, emb)
            skips.append(h)
            h = down(h)
        h = self.mid(h, emb)
        for block in self.up:
            skip = skips.pop()
            if h.shape[-1] != skip.shape[-1]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1), emb)
        return self.out(h)


def to_generator_images(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """(N, 3, H, W) uint8 (any size) -> (N, 3, R, R) uint8, antialiased bilinear resize."""
    x = images.float()
    if tuple(x.shape[-2:]) != (resolution, resolution):
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear",
                          align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8)


def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.mul_(decay).add_(p.detach(), alpha=1 - decay)


def train_image_generator(
    images: torch.Tensor,
    config: ImageGeneratorConfig,
    device: torch.device | str = "cpu",
) -> Generator[JobEvent, None, tuple[nn.Module, dict[str, Any]]]:
    """Train the generator on real images; yields events, returns (EMA network, summary).

    Args:
        images: (N, 3, R, R) uint8 RGB training images at the generator's resolution.
        config: settings. device: torch device.

    Returns:
        the network used for sampling (EMA weights when ``ema_decay > 0``, eval mode) and
        ``{"steps", "seconds", "loss", "num_parameters"}``.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (N, 3, R, R) uint8 images, got {tuple(images.shape)} "
                         f"{images.dtype}")
    device = torch.device(device)
    torch.manual_seed(config.seed)
    net = ImageUNet(**config.network_kwargs()).to(device).train()
    ema = copy.deepcopy(net).eval() if config.ema_decay > 0 else None
    schedule = config.make_schedule()
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(config.seed)
    data = images.float() / 127.5 - 1.0
    start = time.monotonic()
    running, step = 0.0, 0
    warmup = max(1, min(100, config.steps // 10))
    while step < config.steps:
        minutes = (time.monotonic() - start) / 60
        if config.minutes is not None and minutes >= config.minutes:
            break
        idx = torch.randint(len(data), (config.batch_size,), generator=gen)
        x0 = data[idx]
        flips = torch.rand(config.batch_size, 2, generator=gen)
        x0 = torch.where(flips[:, 0, None, None, None] < 0.5, x0.flip(-1), x0)
        if config.vertical_flips:
            x0 = torch.where(flips[:, 1, None, None, None] < 0.5, x0.flip(-2), x0)
        x0 = x0.to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = torch.randint(config.num_timesteps, (config.batch_size,), generator=gen).to(device)
        x_t = schedule.add_noise(x0, noise, t)
        target = training_target(config.target, x0, noise, t, schedule)  # type: ignore[arg-type]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp_bf16):
            pred = net(x_t, t)
        loss = F.mse_loss(pred.float(), target)
        progress = max(step / config.steps,
                       minutes / config.minutes if config.minutes else 0.0)
        lr = config.lr * min(1.0, (step + 1) / warmup) * (
            0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * 0.9 + 0.1)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if ema is not None:
            # A short run cannot wait for a 0.995 average to warm up: ramp the decay.
            _ema_update(ema, net, min(config.ema_decay, (1 + step) / (10 + step)))
        step += 1
        value = float(loss.detach())
        running = value if step == 1 else 0.95 * running + 0.05 * value
        yield JobEvent("progress", step=step, total=config.steps, message="image generator",
                       values={"loss": running})
    final = (ema if ema is not None else net).eval()
    return final, {"steps": step, "seconds": time.monotonic() - start, "loss": running,
                   "num_parameters": sum(p.numel() for p in net.parameters())}


@torch.no_grad()
def sample_images(
    network: nn.Module,
    config: ImageGeneratorConfig,
    num_images: int,
    seed: int = 0,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> Generator[JobEvent, None, torch.Tensor]:
    """DDIM samples from noise; yields one event per network call, returns (N, 3, R, R) uint8.

    Image i's initial noise comes from ``torch.Generator().manual_seed(seed + i)``, so a
    sample does not depend on the batch it was drawn in.
    """
    device = torch.device(device)
    schedule = config.make_schedule()
    steps = ddim_timesteps(config.num_timesteps, config.sample_steps, "trailing")
    r = config.resolution
    out = []
    total = math.ceil(num_images / batch_size) * len(steps)
    calls = 0
    for first in range(0, num_images, batch_size):
        ids = range(first, min(num_images, first + batch_size))
        gens = [torch.Generator().manual_seed(seed + i) for i in ids]
        x = torch.stack([torch.randn(3, r, r, generator=g) for g in gens]).to(device)
        for k, t in enumerate(steps):
            t_prev = steps[k + 1] if k + 1 < len(steps) else -1
            tt = torch.full((x.shape[0],), t, device=device, dtype=torch.long)
            x0, eps = to_x0_and_eps(config.target, network(x, tt), x, tt,  # type: ignore[arg-type]
                                    schedule, clip_x0=True)
            a, d, sigma = ddim_coefficients(schedule, t, t_prev, config.eta)
            x = a * x0 + d * eps
            if sigma > 0:
                z = torch.stack([torch.randn(3, r, r, generator=g) for g in gens]).to(device)
                x = x + sigma * z
            calls += 1
            yield JobEvent("progress", step=calls, total=total, message="generating images")
        out.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu())
    return torch.cat(out) if out else torch.zeros(0, 3, r, r, dtype=torch.uint8)


def save_generator(folder: str | Path, network: nn.Module, config: ImageGeneratorConfig,
                   extra: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` (kind ``image-generator``) + fp32 ``model.safetensors``."""
    from safetensors.torch import save as save_tensors

    folder = Path(folder)
    tensors = {k: v.detach().cpu().float().contiguous()
               for k, v in network.state_dict().items()}
    meta = {"kind": KIND, "_class_name": "ImageUNet", "generator": config.to_dict(),
            "num_parameters": sum(p.numel() for p in network.parameters()),
            "package_version": __version__, "torch_version": torch.__version__.split("+")[0],
            **(extra or {})}
    atomic_write_bytes(folder / "model.safetensors", save_tensors(tensors))
    atomic_write_bytes(folder / "config.json", (json.dumps(meta, indent=2) + "\n").encode())
    return folder


def load_generator(folder: str | Path) -> tuple[nn.Module, ImageGeneratorConfig]:
    """Rebuild a generator saved by :func:`save_generator` (eval mode, float32)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = json.loads((folder / "config.json").read_text())
    if meta.get("kind") != KIND:
        raise ValueError(f"{folder}: not an image generator (kind {meta.get('kind')!r})")
    config = ImageGeneratorConfig.from_dict(meta["generator"])
    net = ImageUNet(**config.network_kwargs())
    net.load_state_dict(load_file(str(folder / "model.safetensors")))
    return net.eval(), config
