"""Image names: the project's ids, which also become file names on export.

An image's name ends up in paths: ``export_labels`` writes ``<out>/masks/<name>.png`` and
``<out>/images/<name><suffix>``, and every training job exports that way. So a name must be
exactly one harmless path component. :func:`check_image_name` enforces it where names enter
the store (``add_image``, ``import_folder``); :func:`child_file` re-checks at write time that
a destination stays inside its folder (defence in depth: a name could come from an old
database or be edited by hand); :func:`safe_image_name` turns an unsafe name of an old
project into a safe, unique one (schema migration 4).

Rules (:func:`image_name_problem`): a non-empty ``str`` of at most :data:`MAX_NAME_BYTES`
UTF-8 bytes, without ``/``, ``\\`` or ``:`` (no separators, no absolute or drive paths),
without NUL or other control characters, not starting with ``.`` (no ``.``/``..``, no hidden
or temporary-looking files) and without leading or trailing spaces.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

from napari_lesion_diffkd.core.store.errors import InvalidInputError

#: Longest name in UTF-8 bytes: leaves room for suffixes (``.nii.gz``) and the temporary
#: names of atomic writes (``.<name>.<12 hex>.tmp``) within the usual 255-byte limit.
MAX_NAME_BYTES = 200
_FORBIDDEN = frozenset("/\\:")


def image_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be an image name (see the module rules), or None when it can."""
    if not isinstance(name, str):
        return f"must be text, not {type(name).__name__}"
    if not name:
        return "is empty"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    bad = sorted({c for c in name if c in _FORBIDDEN})
    if bad:
        return f"contains {''.join(bad)!r} (a name is one file-name component, no path)"
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        return "contains NUL or control characters"
    if name.startswith("."):
        return "starts with '.'"
    if name != name.strip():
        return "starts or ends with white space"
    return None


def check_image_name(name: object) -> str:
    """``name`` if it is a valid image name, else :class:`InvalidInputError` saying why."""
    problem = image_name_problem(name)
    if problem is not None:
        raise InvalidInputError(f"image name {name!r} refused: it {problem}")
    return str(name)


def safe_image_name(name: str, taken: set[str], image_id: int) -> str:
    """A valid name for an image whose stored ``name`` is not, unique among ``taken``.

    Deterministic: forbidden and control characters become ``_``, leading dots and spaces
    are dropped, the result is cut to fit; on a clash ``-<image id>`` (then ``-2``, ``-3``
    ...) is appended. ``taken`` is not modified."""
    chars = ["_" if c in _FORBIDDEN or unicodedata.category(c) in ("Cc", "Cs") else c
             for c in str(name)]
    base = "".join(chars).lstrip(". ").rstrip() or f"image-{image_id}"
    while len(base.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES - 16:
        base = base[:-1]
    candidate, n = base, 1
    while candidate in taken or image_name_problem(candidate) is not None:
        n += 1
        candidate = f"{base}-{image_id}" if n == 2 else f"{base}-{image_id}-{n - 1}"
    return candidate


def child_file(folder: str | os.PathLike, filename: str,
               root: str | os.PathLike | None = None) -> Path:
    """``folder / filename`` after checking it cannot leave ``folder`` (nor ``root``):
    ``filename`` must be one component (a valid image name plus a suffix), and ``folder``,
    symlinks resolved, must lie inside ``root`` when given (a planted ``masks -> /etc``
    link is refused). The file itself is not resolved: it may be an old export's symlink
    that is about to be replaced.

    Raises:
        InvalidInputError: the destination would be outside ``folder`` / ``root``.
    """
    base = Path(folder)
    problem = image_name_problem(filename)
    if problem is not None or Path(filename).name != filename:
        raise InvalidInputError(f"refusing to write {filename!r} into {base}: the name "
                                f"{problem or 'is not one component'}")
    if root is not None:
        top = Path(root).resolve(strict=False)
        real = base.resolve(strict=False)
        if real != top and top not in real.parents:
            raise InvalidInputError(f"refusing to write into {base}: it resolves to {real}, "
                                    f"outside {top}")
    return base / filename
