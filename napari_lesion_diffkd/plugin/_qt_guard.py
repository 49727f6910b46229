"""Guard against a Qt-binding bug that aborts the interpreter after enough Qt calls.

PySide6-Essentials 6.12.0 on CPython 3.11 returns ``None`` from every void method (``setText``,
``setVisible``, ``setItem`` ...) without taking a new reference: each call lowers ``None``'s
reference count by one (measured here: exactly -1 per ``QLabel.setText``; 6.11.3 is fine).
When it reaches zero the interpreter aborts with "Fatal Python error: none_dealloc". napari
itself makes such calls on every redraw and mouse move, and a panel polling twice a second
makes tens per second, so a session dies within hours (the test suite died within a minute).

CPython 3.12 made ``None`` immortal, which hides the bug there. :func:`guard_none_refcount`
gives an affected interpreter the same property: it detects the leak with a few calls on a
throw-away ``QObject`` and, only then, raises ``None``'s count by 2**40 (the count is the
first field of every object, at ``id(obj)``). The real fix is a binding without the bug:
pin ``PySide6-Essentials<6.12`` (or any later release that fixes it).
"""

from __future__ import annotations

import ctypes
import sys

_DONE = False
#: True when the leak was found and the guard applied (for tests and bug reports).
APPLIED = False


def guard_none_refcount() -> bool:
    """Detect the binding's ``None`` leak once per process and neutralise it; True if it was
    applied. Needs a ``QApplication`` (widgets exist only with one)."""
    global _DONE, APPLIED
    if _DONE or sys.version_info >= (3, 12):  # immortal None: nothing can go wrong
        return APPLIED
    _DONE = True
    from qtpy.QtCore import QObject

    probe = QObject()
    calls = 16
    before = sys.getrefcount(None)
    for _ in range(calls):
        probe.setObjectName("probe")  # a void method
    leaked = before - sys.getrefcount(None)
    # ob_refcnt is the first field of an object except in Py_TRACE_REFS debug builds
    # (which have sys.getobjects); there, leave it alone.
    if leaked >= calls // 2 and not hasattr(sys, "getobjects"):
        ctypes.c_ssize_t.from_address(id(None)).value += 1 << 40
        APPLIED = sys.getrefcount(None) > 1 << 39
    return APPLIED
