"""The "Annotation project" dock widget: import, queue order and status, Next / Previous with
cached predictions, Save, and autosave on image change, layer removal, re-run and close."""

from __future__ import annotations

import numpy as np
import pytest

from tests.plugin.conftest import STUDENT, wait_idle

pytestmark = pytest.mark.gui


@pytest.fixture
def panel(viewer, qtbot, tmp_path, ph2_subset, flat_images):
    from napari_lesion_diffkd.plugin.project_widget import ProjectWidget

    w = ProjectWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.open_project(tmp_path / "project")
    w.modality_combo.setCurrentText("dermoscopy")
    w.import_paths([str(ph2_subset), str(flat_images)])
    wait_idle(qtbot, w)
    return w


def _store(panel):
    return panel.context.store


def _segment(store, name: str):
    """A real prediction of the shipped student, stored in the project (a cached result)."""
    from napari_lesion_diffkd.core.jobs import run_to_completion
    from napari_lesion_diffkd.core.registry import load_model
    from napari_lesion_diffkd.core.segmenter import segment_image

    image = store.image(name)
    result = run_to_completion(segment_image(load_model(STUDENT), store.read_image(image).data,
                                             num_samples=3))
    return store.save_prediction(image, result, STUDENT, "test")


def test_import_queue_order_and_status(panel) -> None:
    rows = panel.queue_table.rows
    assert "imported 14 images and 12 labels" in panel.status.text()
    assert [r.status for r in rows] == ["human"] * 12 + ["unlabelled"] * 2
    assert [r.image_id for r in rows] == sorted(r.image_id for r in rows)  # no ranking: id
    assert _store(panel).image(rows[0].name).modality == "dermoscopy"

    # A finished score job's ranking orders the queue (ids it lacks follow by id).
    store = _store(panel)
    ranked = [rows[13].image_id, rows[12].image_id]
    job = store.jobs.submit("score", {"model": STUDENT})
    assert store.jobs.claim(job.id, "cpu").claimed
    store.jobs.finish(job.id, "done", result={"ranking": [
        {"id": ranked[0], "image": rows[13].name, "score": 0.3},
        {"id": ranked[1], "image": rows[12].name, "score": 0.1}]})
    panel.refresh_queue()
    new = panel.queue_table.rows
    assert [r.image_id for r in new[:2]] == ranked and new[0].score == pytest.approx(0.3)
    assert [r.image_id for r in new[2:]] == [r.image_id for r in rows[:12]]
    assert panel.queue_table.item(0, 1).text() == "0.3000"

    # An active-learning round's stored annotation queue takes precedence.
    from napari_lesion_diffkd.core.active_learning.rounds import finish_round, start_round

    loop_job = store.jobs.submit("loop-round", {})
    round_no = start_round(store, loop_job.id, "uncertainty").round
    finish_round(store, round_no, [(rows[12].image_id, 0.9)], "queue", {})
    panel.refresh_queue()
    assert panel.queue_table.rows[0].image_id == rows[12].image_id
    assert panel.queue_table.rows[0].score == pytest.approx(0.9)


def test_next_previous_open_cached_prediction_and_label(panel, qtbot) -> None:
    viewer, rows = panel.viewer, panel.queue_table.rows
    _segment(_store(panel), rows[0].name)
    panel.next_image()
    wait_idle(qtbot, panel)
    first = rows[0].name
    assert panel.current["name"] == first and first in viewer.layers
    assert viewer.layers[first].rgb
    assert f"{first} consensus" in viewer.layers and f"{first} label" in viewer.layers
    # A 2D image's samples ride on the consensus layer (no (K, Y, X) layer, no K slider).
    assert f"{first} samples" not in viewer.layers
    assert viewer.layers[f"{first} consensus"].metadata["lesion_diffkd"]["samples"].shape[0] == 3
    np.testing.assert_array_equal(viewer.layers[f"{first} label"].data,
                                  _store(panel).read_label(_store(panel).current_label(first)))
    assert "cached prediction" in panel.status.text()

    panel.next_image()
    wait_idle(qtbot, panel)
    assert panel.current["name"] == rows[1].name and first not in viewer.layers
    assert f"{first} consensus" not in viewer.layers  # the old image's layers are gone
    panel.previous_image()
    wait_idle(qtbot, panel)
    assert panel.current["name"] == first
    assert panel.queue_table.selected_index() == 0


def test_save_and_every_autosave(panel, qtbot) -> None:
    from napari_lesion_diffkd.plugin._context import app_context

    viewer, store, rows = panel.viewer, _store(panel), panel.queue_table.rows
    unlabelled = rows[12]
    panel.open_row(12)
    wait_idle(qtbot, panel)
    label = viewer.layers[f"{unlabelled.name} label"]  # nothing stored: an empty layer
    assert not label.data.any() and panel.source_layer() is label

    label.paint((100, 100), 1)  # napari's brush
    assert panel.save().result(10) is not None
    qtbot.waitUntil(lambda: "saved label" in panel.status.text())
    saved = store.current_label(unlabelled.name)
    assert saved.kind == "human" and saved.author
    np.testing.assert_array_equal(store.read_label(saved), label.data)
    panel.refresh_queue()
    assert panel.queue_table.rows[12].status == "human"

    # Unchanged layers are not saved again; an edit is saved when the image changes.
    assert panel.autosave("test") is False
    label.paint((50, 50), 1)
    edited = np.array(label.data)
    panel.open_row(13)
    wait_idle(qtbot, panel)
    panel.save_queue.flush()
    latest = store.current_label(unlabelled.name)
    assert latest.id > saved.id and "image change" in latest.note
    np.testing.assert_array_equal(store.read_label(latest), edited)

    # An edited consensus about to be replaced by a new run is saved first.
    other = panel.current["name"]
    consensus = viewer.add_labels(np.zeros(store.image(other).shape, np.uint8))
    from napari_lesion_diffkd.plugin._layers import digest, model_meta

    consensus.metadata = model_meta("consensus", other, clean=digest(consensus.data))
    consensus.paint((10, 10), 1)
    app_context(viewer).consensus_replacing.emit(consensus)
    # And a removed layer with edits, and everything when the viewer closes.
    label2 = viewer.layers[f"{other} label"]
    label2.paint((30, 30), 1)
    viewer.layers.remove(label2)
    panel.save_queue.flush()
    notes = [v.note for v in store.label_versions(other)]
    assert any("before a new run" in n for n in notes) and any("layer removed" in n for n in notes)
    consensus.paint((12, 12), 1)
    queue = panel.save_queue
    viewer.close()
    queue.flush()
    from napari_lesion_diffkd.core.store import ProjectStore

    with ProjectStore(store.root) as fresh:
        assert "layer removed" in fresh.label_versions(other)[-1].note
        assert fresh.read_label(fresh.current_label(other))[12, 12] == 1
