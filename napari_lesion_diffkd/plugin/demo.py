"""``lesion-diffkd demo``: napari with the segmentation widget docked and an image open.

Image choice: the user's PATH; else the first PH2 image of the real data folder
(``$LESION_DIFFKD_DATA`` or ``../shared/data`` beside the checkout); else the project's own
procedural dermoscopy phantom. ``screenshot`` runs one segmentation, saves a PNG of the whole
window and exits (used to check the demo under Xvfb and for the user guide).
"""

from __future__ import annotations

import sys
from pathlib import Path


def demo_image_path() -> Path | None:
    """The first PH2 image of the shared data folder, if there is one."""
    from napari_lesion_diffkd.core.data.locate import find_data_root

    root = find_data_root()
    if root is None:
        return None
    images = sorted((root / "ph2_dermoscopy" / "images").glob("*.jpg"))
    return images[0] if images else None


def open_demo_viewer(path: str | None, model: str, show: bool = True):
    """Create the viewer, open the image, dock the widget; returns (viewer, widget)."""
    import napari

    # The demo may block while torch loads (a script, not a docked plugin): the model
    # picker then fills at once instead of in a worker thread.
    import napari_lesion_diffkd.core.registry  # noqa: F401
    from napari_lesion_diffkd.plugin.segment_widget import SegmentWidget

    viewer = napari.Viewer(title="napari-lesion-diffkd demo", show=show)
    chosen = Path(path) if path else demo_image_path()
    if chosen is not None:
        layers = viewer.open(str(chosen), plugin="napari-lesion-diffkd")
        if not layers:
            print(f"could not open {chosen}; showing the phantom instead", file=sys.stderr)
            chosen = None
    if chosen is None:
        from napari_lesion_diffkd.plugin._sample_data import sample_dermoscopy

        for data, kwargs, kind in sample_dermoscopy():
            getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Lesion segmentation", area="right")
    images = [layer.name for layer in viewer.layers if layer.__class__.__name__ == "Image"]
    if images:
        widget.select_image(images[0])
    if model:
        widget.select_model(model)
    return viewer, widget


def run_demo(path: str | None = None, model: str = "dermoscopy-teacher", run: bool = False,
             screenshot: str | None = None) -> int:
    """Open the demo; with ``screenshot`` run once, save the window and exit. Exit code."""
    import napari
    from qtpy.QtCore import QTimer

    viewer, widget = open_demo_viewer(path, model, show=True)
    if widget.model_combo.count() == 0:
        print("no registered model found: see README (models/)", file=sys.stderr)
    if screenshot is None:
        if run:
            QTimer.singleShot(500, widget.run)
        napari.run()
        return 0

    state = {"code": 0}

    def finish() -> None:
        if widget.worker is not None:
            QTimer.singleShot(200, finish)
            return
        if widget.last_result is None:
            print(f"segmentation did not finish: {widget.status.text()}", file=sys.stderr)
            state["code"] = 1
        layer = viewer.layers[-1]
        viewer.layers.selection.active = layer
        Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(screenshot, canvas_only=False, flash=False)
        print(f"screenshot saved to {screenshot}")
        viewer.close()

    def start() -> None:
        widget.run()
        QTimer.singleShot(500, finish)

    QTimer.singleShot(300, start)
    napari.run()
    return state["code"]
