"""Re-importing files that are already in the project says so (issue 14, item 10): the
message counts only the images added and names the duplicates it skipped."""

from __future__ import annotations

import pytest

from tests.plugin.conftest import wait_idle

pytestmark = pytest.mark.gui


def test_reimport_counts_only_added_images_and_names_duplicates(
        viewer, qtbot, tmp_path, flat_images, ph2_subset) -> None:
    from napari_lesion_diffkd.plugin.project_widget import ProjectWidget

    panel = ProjectWidget(viewer)
    viewer.window.add_dock_widget(panel)
    panel.open_project(tmp_path / "project")
    files = sorted(str(p) for p in flat_images.iterdir())
    names = [p.rsplit("/", 1)[1].rsplit(".", 1)[0] for p in files]

    panel.import_paths(files, modality="dermoscopy")
    wait_idle(qtbot, panel)
    assert panel.status.text() == "imported 2 images and 0 labels"

    panel.import_paths(files, modality="dermoscopy")  # the same two files again
    wait_idle(qtbot, panel)
    text = panel.status.text()
    assert "imported 2" not in text
    assert text == (f"nothing new imported; 2 images already in the project skipped "
                    f"({names[0]}, {names[1]})")
    assert len(panel.context.store.images()) == 2

    # A folder, then the folder and one known file again: only new ones are counted.
    panel.import_paths([str(ph2_subset)], modality="dermoscopy")
    wait_idle(qtbot, panel)
    assert panel.status.text().startswith("imported 12 images and 12 labels")
    panel.import_paths([str(ph2_subset), files[0]], modality="dermoscopy")
    wait_idle(qtbot, panel)
    text = panel.status.text()
    assert text.startswith("nothing new imported; 13 images already in the project skipped")
    assert "and 8 more" in text and "12 labels unchanged" in text
