"""State shared by the plugin's dock widgets of one viewer.

napari creates each npe2 widget on its own, so the widgets meet here: the open project (one
GUI-thread :class:`core.store.ProjectStore` for quick reads), the user's extra bundle folders
and signals that keep them in step (a finished job's model appears in every model picker;
the project panel's image becomes the Segment widget's image).
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QObject, Signal

if TYPE_CHECKING:
    import napari


class AppContext(QObject):
    """Per-viewer shared state.

    Signals:
        project_changed(object): the project folder (Path) or None.
        models_changed(): bundles were added (folder, finished job): refresh pickers.
        image_opened(str): the project panel opened this image layer.
        consensus_replacing(object): a consensus layer the user edited is about to be
            overwritten by a new run (emitted synchronously; the project panel saves it).
        job_finished(object): a job of the project ended (its ``JobRecord``).
    """

    project_changed = Signal(object)
    models_changed = Signal()
    image_opened = Signal(str)
    consensus_replacing = Signal(object)
    job_finished = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.project_path: Path | None = None
        self.store: Any = None  # ProjectStore, GUI thread only
        self.user_bundles: list[Path] = []

    def set_project(self, path: str | Path | None, create: bool = True) -> Any:
        """Open (creating if asked) the project at ``path``; None closes it. Returns the
        store. Raises :class:`core.store.StoreError` when it cannot be opened."""
        from napari_lesion_diffkd.core.store import ProjectStore

        store = None if path is None else ProjectStore(path, create=create)
        if self.store is not None:
            self.store.close()
        self.store = store
        self.project_path = None if store is None else store.root
        self.project_changed.emit(self.project_path)
        self.models_changed.emit()  # project model versions come and go with the project
        return store

    def project_models(self) -> list[Any]:
        """The open project's model versions (``ModelRecord``), oldest first."""
        return [] if self.store is None else self.store.models()

    def add_user_bundle(self, folder: str | Path) -> None:
        """Remember a bundle folder for every picker of this viewer."""
        path = Path(folder).expanduser().resolve()
        if path not in self.user_bundles:
            self.user_bundles.append(path)
        self.models_changed.emit()

    def catalog(self) -> list[Any]:
        """Every usable model (see :func:`._catalog.build_catalog`)."""
        from napari_lesion_diffkd.plugin._catalog import build_catalog

        return build_catalog(self.user_bundles, self.project_models())

    def close(self) -> None:
        """Close the store (the viewer is going away)."""
        if self.store is not None:
            self.store.close()
            self.store = None


_CONTEXTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def app_context(viewer: napari.viewer.Viewer) -> AppContext:
    """The viewer's :class:`AppContext` (created on first use)."""
    from napari_lesion_diffkd.plugin._qt_guard import guard_none_refcount

    guard_none_refcount()  # every widget passes here first (see _qt_guard)
    ctx = _CONTEXTS.get(viewer)
    if ctx is None:
        ctx = AppContext()
        _CONTEXTS[viewer] = ctx
    return ctx
