"""The interaction log through the GUI (SAM prompts, brush strokes, undo / redo, accept,
save; ``project replay`` rebuilds the saved label bit for bit, ``project effort`` counts
it), the "next uncertain region" and "accept as is" actions, and the queue's confidence
badge. No wall-clock threshold anywhere."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from tests.plugin.conftest import wait_idle

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def _lesion_sam_tiny_default(monkeypatch):
    """lesion-sam-tiny, not the heavy medsam-lite, is the panel's SAM here."""
    monkeypatch.setenv("LESION_DIFFKD_SAM", "lesion-sam-tiny")


@pytest.fixture
def panel(viewer, qtbot, tmp_path, ph2_subset):
    from napari_lesion_diffkd.plugin.project_widget import ProjectWidget

    w = ProjectWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.open_project(tmp_path / "project")
    w.modality_combo.setCurrentText("dermoscopy")
    w.import_paths([str(ph2_subset)])
    wait_idle(qtbot, w)
    return w


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    from napari_lesion_diffkd.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def open_image(panel, qtbot, index: int):
    panel.open_row(index)
    wait_idle(qtbot, panel)
    name = panel.current["name"]
    return name, panel.viewer.layers[name]


def save_and_wait(panel, qtbot):
    before = len(panel.context.store.label_versions())
    assert panel.save() is not None
    qtbot.waitUntil(lambda: len(panel.context.store.label_versions()) > before
                    and "saved label" in panel.status.text(), timeout=30_000)
    panel.save_queue.flush()
    qtbot.wait(10)  # the saved signal reaches the GUI thread: the log links the version
    return panel.context.store.label_versions()[-1]


def test_sam_prompts_strokes_undo_accept_save_then_replay(panel, qtbot, capsys) -> None:
    from napari_lesion_diffkd.core.store.interactions import events
    from napari_lesion_diffkd.plugin.correction_widget import CorrectionWidget

    store = panel.context.store
    name, image = open_image(panel, qtbot, 0)
    label = panel.viewer.layers[f"{name} label"]  # the stored human label (the base)
    base_version = store.current_label(name).id
    w = CorrectionWidget(panel.viewer)
    panel.viewer.window.add_dock_widget(w)
    qtbot.waitUntil(lambda: w.backend is not None, timeout=60_000)
    w.image_combo.setCurrentText(name)

    # SAM: one positive click inside the stored lesion.
    w.source_combo.setCurrentText("empty")
    proposal = w.start()
    rows, cols = np.nonzero(label.data)
    prompts = panel.viewer.layers[f"{name} prompts"]
    prompts.add([[float(np.median(rows)), float(np.median(cols))]])
    qtbot.waitUntil(lambda: w.proposals == 1 and not w.is_busy, timeout=60_000)
    assert proposal.data.any()
    proposal.brush_size = 9
    proposal.paint((20, 20), 1)  # a stroke on the proposal, accepted with it
    qtbot.wait(10)
    target = w.accept()
    assert target is label

    # Brush strokes on the label, the panel's undo, napari's own undo and redo.
    label.brush_size = 7
    label.paint((40, 300), 1)
    qtbot.wait(10)
    w.undo()
    label.data_setitem((np.arange(60, 70), np.arange(60, 70)), 2)  # a stroke, as code paints
    qtbot.wait(10)
    label.undo()  # napari's Ctrl-Z
    label.redo()
    qtbot.wait(10)
    expected = np.array(label.data)
    version = save_and_wait(panel, qtbot)
    np.testing.assert_array_equal(store.read_label(version), expected)

    logged = events(store, name)
    session = [e.kind for e in logged if e.layer == "label"]
    assert session[0] == "base" and session[-1] == "save"
    base = next(e for e in logged if e.layer == "label" and e.kind == "base")
    assert base.data["source"] == "label" and base.data["version"] == base_version
    assert session[1:-1] == ["accept", "stroke", "undo", "stroke", "undo", "redo"], session
    assert [e.kind for e in logged if e.layer == "proposal"][:2] == ["base", "model"]
    assert any(e.kind == "stroke" for e in logged if e.layer == "proposal")
    prompt = next(e for e in logged if e.kind == "prompt")
    assert prompt.data["type"] == "point" and prompt.data["positive"] is True
    assert any(e.kind == "model" and str(e.data["model"]).startswith("lesion-sam-tiny")
               for e in logged)

    root = str(store.root)
    code, out, err = cli(capsys, "project", "replay", "--image", name, "--project", root)
    assert code == 0 and json.loads(out)["identical"] and json.loads(out)["version"] == \
        version.id, err
    code, out, _ = cli(capsys, "project", "effort", "--project", root, "--json")
    row = next(json.loads(line) for line in out.splitlines() if json.loads(line)["image"] == name)
    assert code == 0 and row["prompts"] == 1 and row["accepts"] == 1 and row["saves"] == 1
    assert row["strokes"] == 3 and row["undos"] == 2 and row["redos"] == 1
    assert row["model_calls"] >= 1 and row["versions"] == [version.id]


def _prediction(shape: tuple[int, ...], disagreement: float) -> SimpleNamespace:
    """A stored-prediction stand-in: two uncertain blobs, the larger at rows 40-80 and
    columns 100-160, and a consensus square."""
    uncertainty = np.zeros(shape, np.float32)
    uncertainty[40:81, 100:161] = 0.9
    uncertainty[200:211, 300:311] = 0.7
    consensus = np.zeros(shape, bool)
    consensus[150:250, 200:330] = True
    return SimpleNamespace(samples=np.stack([consensus, consensus]),
                           probability=consensus.astype(np.float32), uncertainty=uncertainty,
                           consensus=consensus, settings={"samples": 2},
                           scores={"sample_disagreement": disagreement})


def test_next_region_accept_as_is_and_the_confidence_badge(panel, qtbot, capsys) -> None:
    from napari_lesion_diffkd.core.store.interactions import events
    from napari_lesion_diffkd.plugin.correction_widget import CorrectionWidget

    store = panel.context.store
    first, second = store.images()[:2]
    store.save_prediction(first, _prediction(first.shape, 0.05), "student", "1")
    store.save_prediction(second, _prediction(second.shape, 0.4), "student", "1")
    panel.refresh_queue()
    badges = {panel.queue_table.item(i, 0).text(): panel.queue_table.item(i, 3).text()
              for i in range(panel.queue_table.rowCount())}
    assert badges[first.name] == "\u25cf high" and badges[second.name] == "\u25cf low"
    assert badges[store.images()[2].name] == ""  # no stored prediction: no badge

    name, image = open_image(panel, qtbot, panel.queue_table.index_of(first.id))
    w = CorrectionWidget(panel.viewer, autoload_sam=False)
    panel.viewer.window.add_dock_widget(w)
    w.image_combo.setCurrentText(name)
    viewer = panel.viewer
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    zoom = camera.zoom
    keys = {str(key): func for key, func in viewer.keymap.items()}
    shown = keys["Shift+N"](viewer)  # the shortcut
    scale = np.asarray(image.scale[-2:], float)
    assert shown["box"] == [40, 100, 80, 160] and shown["reviewed"] == 1
    np.testing.assert_allclose(camera.center[-2:], np.array([60.0, 130.0]) * scale)
    assert camera.zoom != zoom
    shown = w.next_region()  # the first is reviewed: the next one
    assert shown["box"] == [200, 300, 210, 310] and shown["left"] == 0
    np.testing.assert_allclose(camera.center[-2:], np.array([205.0, 305.0]) * scale)
    assert w.next_region() is None and "reviewed" in w.status.text()

    # Accept as is: the consensus becomes the label in one step, then saved and replayed.
    w.source_combo.setCurrentText("consensus")
    target = keys["Shift+Enter"](viewer)  # accept as is
    consensus = panel.viewer.layers[f"{name} consensus"]
    np.testing.assert_array_equal(target.data > 0, consensus.data > 0)
    version = save_and_wait(panel, qtbot)
    logged = events(store, name)
    assert [e.data for e in logged if e.kind == "review"][0]["box"] == [40, 100, 80, 160]
    accept = next(e for e in logged if e.kind == "accept")
    assert accept.data.get("as_is") is True and accept.layer == "label"
    code, out, _ = cli(capsys, "project", "replay", "--image", name, "--version",
                       str(version.id), "--project", str(store.root))
    assert code == 0 and json.loads(out)["different"] == 0

    # The viewer closing: the autosave is linked at once (its saved signal may never come).
    label = viewer.layers[f"{name} label"]
    label.paint((30, 30), 1)
    qtbot.wait(10)
    panel.on_viewer_closing()
    newest = store.label_versions(name)[-1]
    assert newest.id > version.id and "viewer closing" in newest.note
    code, out, _ = cli(capsys, "project", "replay", "--image", name, "--project",
                       str(store.root))
    assert code == 0 and json.loads(out)["version"] == newest.id


def test_next_region_on_a_volume_follows_the_slice(viewer, qtbot) -> None:
    from napari_lesion_diffkd.plugin._layers import model_meta
    from napari_lesion_diffkd.plugin.correction_widget import CorrectionWidget

    volume = np.zeros((5, 64, 80), np.float32)
    image = viewer.add_image(volume, name="ct", scale=(2.5, 0.5, 0.5))
    uncertainty = np.zeros_like(volume)
    uncertainty[2, 10:21, 30:41] = 0.9  # slice 2: one region
    uncertainty[3, 40:51, 60:71] = 0.9  # slice 3: another
    viewer.add_image(uncertainty, name="ct uncertainty", scale=(2.5, 0.5, 0.5),
                     metadata=model_meta("uncertainty", "ct"))
    w = CorrectionWidget(viewer, autoload_sam=False)
    viewer.window.add_dock_widget(w)
    w.image_combo.setCurrentText("ct")
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    viewer.dims.set_point(0, 2 * 2.5)
    shown = w.next_region()
    assert shown["z"] == 2 and shown["box"] == [10, 30, 20, 40]
    np.testing.assert_allclose(camera.center[-2:], [7.5, 17.5])
    assert w.next_region() is None  # the slice's only region was reviewed
    viewer.dims.set_point(0, 3 * 2.5)
    shown = w.next_region()
    assert shown["z"] == 3 and shown["box"] == [40, 60, 50, 70]
    assert image.ndim == 3 and round(viewer.dims.point[0] / 2.5) == 3
