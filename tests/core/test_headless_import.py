"""core/ must never import napari or Qt: checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import importlib, pkgutil, sys
import napari_lesion_diffkd.core as core
for mod in pkgutil.walk_packages(core.__path__, core.__name__ + '.'):
    importlib.import_module(mod.name)
import napari_lesion_diffkd.cli
bad = sorted(m for m in sys.modules if m.split('.')[0] in
             {'napari', 'qtpy', 'PySide6', 'PyQt5', 'PyQt6', 'magicgui', 'superqt', 'vispy'})
print(','.join(bad))
"""


def test_core_and_cli_import_without_napari_or_qt() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""
