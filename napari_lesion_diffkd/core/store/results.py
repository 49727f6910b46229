"""Predictions and model versions of a project (mixed into :class:`ProjectStore`).

Prediction files, in ``predictions/<ab>/<ab...>/`` (random name), all in the image's (Y, X) frame:

* ``samples.npy``: (K, Y, X) uint8 {0, 1}, the K sampled masks;
* ``probability.npy``: (Y, X) float32 in [0, 1], the fused foreground probability;
* ``uncertainty.npy``: (Y, X) float32 in [0, 1], the pixel uncertainty map;
* ``consensus.png``: (Y, X) 8-bit PNG {0, 1}, the fused mask.

A prediction's ``settings_key`` is the canonical JSON of model name, model version and the
sampling settings: two predictions with the same key are interchangeable, which lets a
re-run (or a ``score`` job after a ``predict`` job) reuse instead of recompute.
"""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_lesion_diffkd.core.store import files
from napari_lesion_diffkd.core.store.errors import InvalidInputError, StoreError
from napari_lesion_diffkd.core.store.records import (
    ModelRecord,
    PredictionRecord,
    dumps,
    filtered_rows,
)
from napari_lesion_diffkd.core.store.schema import now

if TYPE_CHECKING:
    from napari_lesion_diffkd.core.store.records import ImageRecord

PREDICTION_PARTS = ("samples", "probability", "uncertainty", "consensus")


def settings_key(model_name: str, model_version: str, settings: dict[str, Any]) -> str:
    """Canonical text identifying a model + sampling settings (see module docstring)."""
    core = {k: v for k, v in settings.items() if k != "model"}
    return dumps({"model": model_name, "version": model_version, "settings": core})


class ResultsMixin:
    """Prediction and model rows; needs ``root``, ``_conn``, ``write()`` and ``image()``."""

    root: Path
    _conn: sqlite3.Connection

    if TYPE_CHECKING:
        def write(self) -> AbstractContextManager[sqlite3.Connection]: ...
        def image(self, ref: Any) -> ImageRecord: ...
        def relative(self, path: Any) -> str: ...

    # ----------------------------------------------------------------- predictions

    def save_prediction(self, image: Any, result: Any, model_name: str,
                        model_version: str, job_id: int | None = None,
                        request: dict[str, Any] | None = None) -> PredictionRecord:
        """Store a segmentation result for ``image``.

        ``result`` is anything with ``samples`` (K, Y, X) bool, ``probability`` and
        ``uncertainty`` (Y, X) float32, ``consensus`` (Y, X) bool and a ``settings`` dict
        (``core.segmenter.SegmentationResult``; the store does not import the segmenter).
        The arrays must be in the image's (Y, X) frame (2D images only). Files first, then
        the row in one transaction; on failure the new folder is removed.

        Args:
            request: the settings the caller asked for; the ``settings_key`` is built from
                them (default: ``result.settings``), so that a later request can find this
                prediction before computing anything.

        Raises:
            InvalidInputError: the result's shape does not match the image.
            StoreWriteError: a file or the row could not be written.
        """
        from napari_lesion_diffkd.core.data.writers import write_mask_png
        from napari_lesion_diffkd.core.store.project import write_error

        record = self.image(image)
        if tuple(result.consensus.shape) != tuple(record.shape):
            raise InvalidInputError(
                f"prediction for {record.name!r}: shape {result.consensus.shape} does not match "
                f"the image's {record.shape}")
        token = files.unique_name()
        rel = f"predictions/{token[:2]}/{token}"
        folder = self.root / rel
        names = {"samples": "samples.npy", "probability": "probability.npy",
                 "uncertainty": "uncertainty.npy", "consensus": "consensus.png"}
        try:
            samples = result.full_samples() if hasattr(result, "full_samples") \
                else result.samples  # at the image's shape, also for a large image
            files.write_array(folder / names["samples"], np.asarray(samples, np.uint8))
            files.write_array(folder / names["probability"],
                              np.asarray(result.probability, np.float32))
            files.write_array(folder / names["uncertainty"],
                              np.asarray(result.uncertainty, np.float32))
            write_mask_png(folder / names["consensus"], np.asarray(result.consensus, np.uint8),
                           binary=False)
        except OSError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise write_error(exc, f"saving a prediction for {record.name!r}") from exc
        key = settings_key(model_name, model_version,
                           result.settings if request is None else request)
        try:
            with self.write() as conn:
                cur = conn.execute(
                    "INSERT INTO predictions (image_id, model_name, model_version, settings, "
                    "settings_key, folder, samples_file, probability_file, uncertainty_file, "
                    "consensus_file, scores, job_id, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (record.id, model_name, model_version, dumps(result.settings), key, rel,
                     *(f"{rel}/{names[p]}" for p in PREDICTION_PARTS),
                     dumps(result.scores), job_id, now()))
                pred_id = int(cur.lastrowid or 0)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return self.prediction(pred_id)

    def prediction(self, prediction_id: int) -> PredictionRecord:
        """One prediction by id."""
        row = self._conn.execute("SELECT * FROM predictions WHERE id = ?",
                                 (prediction_id,)).fetchone()
        if row is None:
            raise InvalidInputError(f"no prediction {prediction_id} in the project")
        return PredictionRecord.from_row(row, self.root)

    def predictions(self, image: Any = None, model_name: str | None = None,
                    settings_key: str | None = None) -> list[PredictionRecord]:
        """Predictions, optionally of one image / model / settings key, oldest first."""
        rows = filtered_rows(self._conn, "SELECT * FROM predictions", [
            ("image_id", None if image is None else self.image(image).id),
            ("model_name", model_name), ("settings_key", settings_key)], "id")
        return [PredictionRecord.from_row(r, self.root) for r in rows]

    def read_prediction(self, prediction: int | PredictionRecord, part: str) -> np.ndarray:
        """One stored array: ``samples`` (K, Y, X) uint8, ``probability`` / ``uncertainty``
        (Y, X) float32, ``consensus`` (Y, X) uint8 {0, 1}."""
        record = prediction if isinstance(prediction, PredictionRecord) \
            else self.prediction(prediction)
        if part not in record.files:
            raise InvalidInputError(f"unknown prediction part {part!r}; one of {PREDICTION_PARTS}")
        path = record.files[part]
        if not path.is_file():
            raise StoreError(f"prediction {record.id}: file {path} is missing")
        return files.read_label_file(path) if part == "consensus" else files.read_array(path)

    # ----------------------------------------------------------------- models

    def register_model(self, name: str, path: str | Path, role: str | None = None,
                       job_id: int | None = None,
                       metrics: dict[str, Any] | None = None) -> ModelRecord:
        """Record a model bundle folder as the next version of ``name`` (1, 2, ...)."""
        with self.write() as conn:
            row = conn.execute("SELECT MAX(version) FROM models WHERE name = ?",
                               (name,)).fetchone()
            version = int(row[0] or 0) + 1
            cur = conn.execute(
                "INSERT INTO models (name, version, path, role, job_id, metrics, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, version, self.relative(path), role, job_id, dumps(metrics or {}),
                 now()))
            model_id = int(cur.lastrowid or 0)
        row = self._conn.execute("SELECT * FROM models WHERE id = ?", (model_id,)).fetchone()
        return ModelRecord.from_row(row, self.root)

    def models(self, name: str | None = None) -> list[ModelRecord]:
        """Model versions, optionally of one name, oldest first."""
        sql = "SELECT * FROM models" + (" WHERE name = ?" if name else "") + " ORDER BY id"
        rows = self._conn.execute(sql, (name,) if name else ()).fetchall()
        return [ModelRecord.from_row(r, self.root) for r in rows]

    def find_model(self, tag: str) -> ModelRecord | None:
        """``name@vN`` (that version) or ``name`` (its newest version); None if unknown."""
        name, _, version = tag.partition("@v")
        versions = [m for m in self.models(name)
                    if not version or (version.isdigit() and m.version == int(version))]
        return versions[-1] if versions else None
