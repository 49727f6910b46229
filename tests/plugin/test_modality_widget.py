"""Issue 14 item 3 in the real Segment widget: the image's modality is detected from its
pixels (a BUS-BRA PNG is ultrasound, a CT slice is CT), shown, a model of another modality
is warned about, and the last choice does not stick to an image of another modality."""

from __future__ import annotations

import pytest
from skimage.io import imread

from tests.plugin.conftest import wait_ready

pytestmark = pytest.mark.gui


@pytest.fixture
def widget(viewer, qtbot, busbra_pairs, ct_pairs, ddti_image):
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    viewer.add_image(imread(busbra_pairs[0][0]), name="us")  # plain gray PNG, no metadata
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    wait_ready(qtbot, w.picker)
    viewer.add_image(imread(ct_pairs[0][0]), name="ct")
    viewer.add_image(ddti_image, name="thyroid")
    return w


@pytest.fixture
def ddti_image(data_root):
    return imread(sorted((data_root / "ddti_thyroid_ultrasound" / "images").iterdir())[0])


def test_gray_ultrasound_and_ct_pngs_get_their_models(widget) -> None:
    form = widget.form
    widget.select_image("us")
    assert form.guess().modality == "ultrasound"
    assert widget.model_combo.currentText() == "ultrasound-student"
    assert "ultrasound" in form.modality_note.text()
    assert "\u26a0" not in form.modality_note.text()

    widget.select_image("ct")
    assert form.guess().modality == "ct"
    assert widget.model_combo.currentText() == "ct-student"
    assert form.modality_note.text().startswith("ct (")

    widget.select_image("thyroid")
    assert widget.model_combo.currentText() == "ultrasound-student"


def test_last_choice_does_not_stick_across_modalities(widget) -> None:
    """The user's teacher choice on an ultrasound image stays for another ultrasound image,
    but a CT slice gets a CT model (issue: it ran with the ultrasound teacher)."""
    widget.select_image("us")
    assert widget.select_model("ultrasound-teacher")
    widget.select_image("thyroid")
    assert widget.model_combo.currentText() == "ultrasound-teacher"  # same modality: kept
    widget.select_image("ct")
    assert widget.model_combo.currentText() == "ct-student"
    # A modality forced by hand for one image resets for an image of another modality.
    widget.select_image("us")
    widget.form.modality_combo.setCurrentText("ct")
    assert widget.model_combo.currentText() == "ct-student"
    widget.select_image("thyroid")
    assert widget.form.modality_combo.currentText().startswith("auto")
    assert widget.model_combo.currentText().startswith("ultrasound")


def test_a_model_of_another_modality_is_warned_about(widget) -> None:
    widget.select_image("ct")
    assert widget.select_model("ultrasound-teacher")  # via "all modalities"
    note = widget.form.modality_note.text()
    assert "\u26a0" in note and "ultrasound-teacher is a model for ultrasound" in note
    assert "looks like ct" in note
    assert widget.select_model("ct-teacher")
    assert "\u26a0" not in widget.form.modality_note.text()


def test_the_compare_panel_detects_gray_images_from_their_pixels(viewer, qtbot, busbra_pairs,
                                                                  ct_pairs) -> None:
    from napari_lesion_diffkd.plugin.compare_widget import CompareWidget

    viewer.add_image(imread(busbra_pairs[0][0]), name="us")  # plain gray PNG, no metadata
    viewer.add_image(imread(ct_pairs[0][0]), name="ct")
    w = CompareWidget(viewer)
    viewer.window.add_dock_widget(w)
    wait_ready(qtbot, w.teacher_picker, w.student_picker)
    w.image_combo.setCurrentText("us")
    assert w.teacher_picker.current().label == "ultrasound-teacher"
    assert w.student_picker.current().label.startswith("ultrasound-")
    w.image_combo.setCurrentText("ct")
    assert w.teacher_picker.current().label == "ct-teacher"
