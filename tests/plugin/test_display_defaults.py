"""Display defaults a clinician meets on the first image: the CT window (the file's own,
else lung, as the guide says), no dims slider from the hidden samples layer of a 2D image,
and a consensus that stands out over a brown lesion."""

from __future__ import annotations

import numpy as np
import pytest

from tests.core.test_dicom import consecutive_ct_slices, write_ct_series
from tests.plugin.conftest import wait_idle, wait_ready

pytestmark = pytest.mark.gui


def _series(tmp_path, data_root, window: tuple[str, str] | None):
    import pydicom

    folder = tmp_path / "ct_series"
    paths = write_ct_series(folder, consecutive_ct_slices(data_root, 3), seed=3)
    for path in paths:
        ds = pydicom.dcmread(path)
        if window is None:
            del ds.WindowCenter
            del ds.WindowWidth
        else:
            ds.WindowCenter, ds.WindowWidth = window
        ds.save_as(path)
    return folder


@pytest.mark.parametrize("window, expected, name", [
    (("50", "350"), (-125.0, 225.0), "file"),   # the file's own (mediastinum) window
    (None, (-1350.0, 150.0), "lung"),           # none in the file: lung, as the guide says
])
def test_ct_window_is_the_files_own_else_lung(viewer, tmp_path, data_root, qtbot,
                                              window, expected, name) -> None:
    from napari_lesion_diffkd.plugin._reader import napari_get_reader
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    folder = _series(tmp_path, data_root, window)
    [(data, kwargs, _)] = napari_get_reader(str(folder))(str(folder))
    assert kwargs["contrast_limits"] == pytest.approx(expected)
    layer = viewer.add_image(data, **kwargs)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    wait_ready(qtbot, widget.picker)
    widget.select_image(layer.name)
    combo = widget.form.window_combo
    assert combo.currentText() == name
    assert tuple(layer.contrast_limits) == pytest.approx(expected)
    if name == "file":  # the presets stay one click away
        combo.setCurrentText("soft_tissue")
        assert tuple(layer.contrast_limits) == pytest.approx((-160.0, 240.0))
        combo.setCurrentText("file")
        assert tuple(layer.contrast_limits) == pytest.approx(expected)


def test_consensus_outline_stands_out_over_a_brown_lesion(viewer, ph2_image, qtbot) -> None:
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    viewer.add_image(ph2_image, name="lesion", rgb=True)
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg)
    wait_ready(qtbot, seg.picker)
    seg.samples_spin.setValue(2)
    seg.run()
    wait_idle(qtbot, seg)
    consensus = seg.last_layers["consensus"]
    mask = np.asarray(consensus.data) > 0
    lesion = ph2_image[mask].mean(axis=0) / 255.0  # the brown lesion's mean colour
    skin = ph2_image[~mask].mean(axis=0) / 255.0
    color = np.asarray(consensus.get_color(1))
    # Drawn as an opaque outline, so the lesion's own border stays visible inside it.
    assert consensus.contour >= 1 and consensus.opacity == 1.0 and color[3] == 1.0
    for background in (lesion, skin):
        assert np.linalg.norm(color[:3] - background) > 0.6, (color, background)
    assert consensus.get_color(0) is None or consensus.get_color(0)[3] == 0


def test_a_2d_image_gets_no_dims_slider_from_its_samples(viewer, ph2_image, qtbot) -> None:
    from napari_lesion_diffkd.plugin.correction_widget import CorrectionWidget
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    viewer.add_image(ph2_image, name="lesion", rgb=True)
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg)
    wait_ready(qtbot, seg.picker)
    seg.samples_spin.setValue(3)
    seg.run()
    wait_idle(qtbot, seg)
    assert viewer.dims.ndim == 2  # no slider for K on a 2D image
    assert "lesion samples" not in viewer.layers
    # The samples stay one click away: the correction panel starts from sample 3.
    correct = CorrectionWidget(viewer, autoload_sam=False)
    viewer.window.add_dock_widget(correct)
    correct.source_combo.setCurrentText("sample")
    correct.sample_spin.setValue(3)
    proposal = correct.start()
    np.testing.assert_array_equal(proposal.data, seg.last_result.samples[2])
    # Asked for, they get their layer (and its K slider).
    seg.samples_layer_check.setChecked(True)
    seg.run()
    wait_idle(qtbot, seg)
    assert viewer.layers["lesion samples"].data.shape[0] == 3 and viewer.dims.ndim == 3
