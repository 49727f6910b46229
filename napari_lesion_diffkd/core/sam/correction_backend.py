"""SAM as the correction panel's prompt backend: napari prompts -> a (Y, X) bool mask.

The correction panel (``plugin/correction_widget.py``) calls :meth:`SamCorrection.propose`
in a worker thread with a request (``plugin._correction.CorrectionRequest``; any object
with the same attributes works, this module imports nothing from the plugin):

* ``image``: (Y, X) gray or (Y, X, 3) pixels of the 2D image or slice;
* ``start``: (Y, X) bool, the mask the correction started from (consensus, a sample, empty);
* ``points``: (N, 2) float napari ``(row, col)`` clicks, ``point_labels``: (N,) 1 = lesion,
  0 = background;
* ``box``: (4, 2) or (2, 2) napari rectangle vertices ``(row, col)``, or None;
* ``key``: the caller's name for the image (e.g. ``(layer name, slice)``).

Every coordinate goes through ``coords.py`` (the one napari <-> SAM converter). The image is
encoded once per (key, content) and kept in the :class:`~.session.PromptSession` cache, so a
new prompt on the same image only runs the prompt encoder and mask decoder (about 15 ms for
``lesion-sam-tiny`` on a CPU). The start mask goes in as SAM's mask prompt (its signed
distance as low-resolution logits, ``inputs.mask_to_prompt_logits``) when it is non-empty
and ``use_start_mask`` is on; with no point and no box the start mask comes back unchanged,
so removing every prompt restores it.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from napari_lesion_diffkd.core.sam.coords import (
    clip_xyxy,
    napari_points_to_xy,
    napari_rectangle_to_xyxy,
)
from napari_lesion_diffkd.core.sam.sam_bundle import LoadedSam
from napari_lesion_diffkd.core.sam.session import PromptSession, PromptResult, content_key

#: The fallback SAM (registered bundle under ``models/``), always available.
DEFAULT_SAM = "lesion-sam-tiny"
#: Environment variable naming the SAM the panel and ``predict`` prompts use by default.
SAM_ENV_VAR = "LESION_DIFFKD_SAM"
RUNTIMES = ("torch", "onnxruntime")


def default_sam() -> str:
    """The promptable model offered first: ``$LESION_DIFFKD_SAM`` when set, else
    ``medsam-lite`` where its checkpoint is installed, else :data:`DEFAULT_SAM`."""
    from napari_lesion_diffkd.core.sam import medsam_lite

    env = os.environ.get(SAM_ENV_VAR, "").strip()
    if env:
        return env
    return medsam_lite.NAME if medsam_lite.is_available() else DEFAULT_SAM


class SamCorrection:
    """A correction backend over one SAM (see the module docstring).

    Args:
        sam: a loaded SAM (:func:`load_correction_backend` loads one by name or path).
        device: torch device for prompting ("cpu", "cuda", ...).
        use_start_mask: pass a non-empty start mask as SAM's mask prompt. None: the model's
            ``mask_prompts`` config key (off for ``medsam-lite``), else on.
        session: a prompt session to use instead of a torch ``PromptSession`` (e.g.
            ``core.onnx.sam_session.OnnxPromptSession``; see ``load_onnx_correction_backend``).
        cache_size: image embeddings kept (least recently used dropped first).

    Attributes:
        name: shown in the panel (the SAM's name and its parameter count).
        session: the :class:`PromptSession` (``encode_count`` counts encoder runs).
        last: the last :class:`PromptResult` (None before the first prompt or when the
            start mask came back unchanged).
    """

    def __init__(self, sam: LoadedSam, device: str = "cpu", use_start_mask: bool | None = None,
                 cache_size: int = 4, session: Any = None) -> None:
        self.sam = sam
        # ONNX Runtime sessions come from core.onnx.sam_session (core.sam must not import
        # core.onnx, which imports core.sam).
        self.runtime = "torch" if session is None else "onnxruntime"
        self.session = session if session is not None else PromptSession(
            sam, device=device, cache_size=cache_size)
        if use_start_mask is None:  # medsam-lite never learnt mask prompts (box-only training)
            use_start_mask = bool(sam.config.get("mask_prompts", True))
        self.use_start_mask = use_start_mask
        self.name = (f"{sam.name} (SAM {sam.arch}, {sam.num_parameters / 1e6:.1f} M"
                     + (", ONNX Runtime)" if session is not None else ")"))
        self.last: PromptResult | None = None
        # One prompt at a time: the session's "current image" is shared state.
        self._lock = threading.Lock()

    def image_key(self, image: np.ndarray, key: Any) -> tuple:
        """The embedding-cache key :meth:`propose` and :meth:`prepare` use for an image."""
        return (key, content_key(np.asarray(image)))

    def prepare(self, image: np.ndarray, key: Any, cancel: Any = None) -> bool:
        """Encode ``image`` into the cache ahead of any prompt (background work).

        Args:
            image: (Y, X) gray or (Y, X, 3) pixels; key: the caller's name for it (the
                request's ``key``). cancel: a ``prefetch.CancelToken``.

        Returns:
            True when the embedding is ready (computed now or cached before).

        Raises:
            prefetch.EncodeCancelled: cancelled before it finished (nothing cached).
        """
        from napari_lesion_diffkd.core.sam.prefetch import cancellable_encoder

        image = np.asarray(image)
        full_key = self.image_key(image, key)  # hashing outside the lock
        with self._lock:  # a prompt asked meanwhile waits here, then hits the cache
            if cancel is not None:
                cancel.raise_if_cancelled()
            if hasattr(self.session, "is_cached"):  # ONNX Runtime: cancels by RunOptions
                self.session.set_image(image, key=full_key, cancel=cancel)
            else:
                with cancellable_encoder(self.session.sam.image_encoder, cancel):
                    self.session.set_image(image, key=full_key)
        return True

    def propose(self, request: Any) -> np.ndarray:
        """The (Y, X) bool mask for a request, in the image's pixel frame.

        Raises:
            ValueError: a malformed request (shapes, labels), with a readable message.
        """
        image = np.asarray(request.image)
        hw = tuple(int(s) for s in image.shape[:2])
        start = np.asarray(request.start, dtype=bool)
        if start.shape != hw:
            raise ValueError(f"start mask {start.shape} does not match the image {hw}")
        points = np.asarray(request.points, dtype=np.float64).reshape(-1, 2)
        labels = np.asarray(request.point_labels, dtype=np.int64).reshape(-1)
        if len(labels) != len(points):
            raise ValueError(f"{len(points)} points but {len(labels)} point labels")
        box = None
        if request.box is not None and np.asarray(request.box).size:
            box = clip_xyxy(napari_rectangle_to_xyxy(request.box), hw)
        if not len(points) and box is None:
            self.last = None
            return start.copy()
        with self._lock:
            # The content hash (a few ms) keeps a stale embedding from answering when a
            # layer of the same name gets new pixels (the project panel's next image).
            self.session.set_image(image, key=self.image_key(image, request.key))
            result = self.session.predict(
                points_xy=napari_points_to_xy(points) if len(points) else None,
                point_labels=labels if len(points) else None,
                box_xyxy=box,
                mask=start if self.use_start_mask and start.any() else None)
        self.last = result
        return result.mask


def load_correction_backend(name_or_path: str | os.PathLike | None = None,
                            device: str = "auto", **kwargs: Any) -> SamCorrection:
    """Load a SAM (registered bundle name, bundle folder, checkpoint file or official
    checkpoint name, see ``loading.load_sam``) as a correction backend.

    Args:
        name_or_path: None: :func:`default_sam`.
        device: ``auto`` (CUDA, else MPS, else CPU), ``cpu``, ``cuda``, ...
        kwargs: passed to :class:`SamCorrection`. ONNX Runtime:
            ``core.onnx.sam_session.load_onnx_correction_backend``.

    Raises:
        LookupError: an unknown name; ``loading.CheckpointUnavailableError``: an official
        checkpoint that is not in the cache; ``loading.SamCheckpointError`` /
        ``bundle.BundleError``: unreadable or mismatching weights.
    """
    from napari_lesion_diffkd.core.registry import resolve_device
    from napari_lesion_diffkd.core.sam.loading import load_sam

    dev = str(resolve_device(device))
    target = default_sam() if name_or_path is None else name_or_path
    return SamCorrection(load_sam(target, device=dev), device=dev, **kwargs)


def sam_choices(project_models: Any = ()) -> list[tuple[str, str]]:
    """The SAMs a user can pick, as ``(label, load target)``: the project's SAM versions
    (role ``promptable``, newest first), ``medsam-lite`` where installed, the registered
    SAM bundles (``lesion-sam-tiny`` first) and the official checkpoint names (loadable
    once in the cache).

    Args:
        project_models: ``core.store`` ``ModelRecord`` rows of the open project.
    """
    from napari_lesion_diffkd.core.registry import list_models
    from napari_lesion_diffkd.core.sam.loading import OFFICIAL_CHECKPOINTS
    from napari_lesion_diffkd.core.sam.sam_bundle import is_sam_bundle

    rows: list[tuple[str, str]] = []
    for record in sorted(project_models, key=lambda m: -m.id):
        if getattr(record, "role", None) == "promptable" and is_sam_bundle(record.path):
            rows.append((record.tag, str(record.path)))
    from napari_lesion_diffkd.core.sam import medsam_lite

    if medsam_lite.is_available():
        rows.append((medsam_lite.NAME, medsam_lite.NAME))
    registered = [(r["name"], r["name"]) for r in list_models() if is_sam_bundle(r["path"])]
    registered.sort(key=lambda row: (row[0] != DEFAULT_SAM, row[0]))
    rows += registered
    rows += [(name, name) for name in OFFICIAL_CHECKPOINTS]
    return rows
