"""One error line and exit code 2 for every store failure of a project command.

A damaged, empty, read-only or unopenable ``project.sqlite``, a full disk or a refused
input must not end a ``job`` / ``project`` command with a traceback: :func:`store_command`
wraps a subcommand's ``run(args)`` so that any :class:`StoreError`, SQLite error or
``OSError`` becomes ``error: <one line>`` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import functools
import sqlite3
import sys
from collections.abc import Callable

EXIT_ERROR = 2


def error_line(message: object) -> int:
    """Print ``error: <first line of message>`` to stderr; returns :data:`EXIT_ERROR`."""
    text = " ".join(str(message).strip().split("\n", 1)[0].split()) or "unknown error"
    print(f"error: {text}", file=sys.stderr)
    return EXIT_ERROR


def store_command(func: Callable[[argparse.Namespace], int]
                  ) -> Callable[[argparse.Namespace], int]:
    """``func`` with store, SQLite and OS errors turned into one line and exit 2."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        from napari_lesion_diffkd.core.store import StoreError
        from napari_lesion_diffkd.core.store.dberrors import is_disk_full, translate

        try:
            return func(args)
        except StoreError as exc:
            return error_line(exc)
        except sqlite3.Error as exc:  # outside the store's own connection
            return error_line(translate(exc, getattr(args, "project", "project.sqlite")))
        except OSError as exc:
            if is_disk_full(exc) and not str(exc).startswith("disk full:"):
                return error_line(f"disk full: {exc}")
            return error_line(exc)

    return run
