"""``lesion-diffkd project``: check, clean up, export, replay and measure an annotation project.

``check`` prints the consistency report as one JSON object (``ok``, ``problems``, missing /
damaged indexed files, leftovers) and exits 1 when the store is not healthy. ``cleanup``
removes leftovers (orphan and temporary files older than ``--min-age`` seconds) and is
refused (exit 1) unless ``check`` finds the store healthy. ``export`` writes the labels as a
plain dataset folder (``images/``, ``masks/``, ``metadata.csv``) into an empty ``--out``, or
replaces an earlier export there with ``--overwrite``. ``replay --image NAME [--version N]``
rebuilds a saved label from the interaction log (its start mask, then every stroke, accept,
undo / redo and model write before the save) and compares it with the stored file: one JSON
line, exit 0 when identical, 1 when different (``different`` = pixel count). ``effort``
prints, per image, the prompts, strokes, accepts, undos, model calls and active seconds the
log holds (a table, or JSON lines with ``--json``).

Exit codes: 0 ok, 1 unhealthy store (check, cleanup) or a replay that differs, 2 errors
(no project, a damaged, empty, read-only or unopenable database, a full disk, a refused
folder, an unknown image or label version, a label without a log): one ``error:`` line on
stderr.
"""

from __future__ import annotations

import argparse
import json
import os

from napari_lesion_diffkd.cli._store_errors import error_line, store_command

PROJECT_ENV_VAR = "LESION_DIFFKD_PROJECT"
EXIT_UNHEALTHY = 1
EXIT_DIFFERENT = 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("project", help="check, clean up, export, replay or measure an "
                       "annotation project",
                       description=__doc__.split("\n\n", 1)[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="project_command", metavar="ACTION")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        action: argparse.ArgumentParser = actions.add_parser(name, help=help_text)
        action.add_argument("--project", default=os.environ.get(PROJECT_ENV_VAR, "."),
                            help=f"project folder (default: ${PROJECT_ENV_VAR} or .)")
        return action

    c = add("check", "database integrity and every indexed file; JSON report")
    c.add_argument("--no-hashes", action="store_true",
                   help="only check that indexed files exist (skip the SHA-256 of each)")
    c.set_defaults(func=store_command(_check))

    u = add("cleanup", "delete leftover unreferenced files (only on a healthy store)")
    u.add_argument("--min-age", type=float, default=3600.0,
                   help="only files older than this many seconds (default 3600: a file "
                        "written a moment ago may be about to get its row)")
    u.add_argument("--force", action="store_true",
                   help="also when the database references no file at all")
    u.set_defaults(func=store_command(_cleanup))

    e = add("export", "write the labels as images/ + masks/ + metadata.csv")
    e.add_argument("--out", required=True, help="an empty or new folder")
    e.add_argument("--which", choices=("current", "human"), default="current",
                   help="the current label (any kind) or the newest human one")
    e.add_argument("--images", choices=("link", "copy", "none"), default="link")
    e.add_argument("--label-ids", action="store_true",
                   help="keep label ids in 2D masks (default: {0, 255} lesion masks)")
    e.add_argument("--overwrite", action="store_true",
                   help="replace an earlier export in --out (removes only its own files)")
    e.set_defaults(func=store_command(_export))

    r = add("replay", "rebuild a saved label from its interaction log and compare")
    r.add_argument("--image", required=True, help="image name (or id)")
    r.add_argument("--version", type=int, default=None,
                   help="label version id (default: the image's newest one with a log)")
    r.set_defaults(func=store_command(_replay))

    f = add("effort", "prompts, edits and seconds per image, from the interaction log")
    f.add_argument("--json", action="store_true", help="one JSON object per image")
    f.set_defaults(func=store_command(_effort))
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _check(args: argparse.Namespace) -> int:
    from napari_lesion_diffkd.core.store import ProjectStore

    with ProjectStore(args.project) as store:
        report = store.check(verify_hashes=not args.no_hashes)
        print(json.dumps({"project": str(store.root), **report.to_dict(store.root)}))
    return 0 if report.ok else EXIT_UNHEALTHY


def _cleanup(args: argparse.Namespace) -> int:
    from napari_lesion_diffkd.core.store import ProjectStore
    from napari_lesion_diffkd.core.store.errors import UnhealthyStoreError

    with ProjectStore(args.project) as store:
        try:
            removed = store.cleanup(min_age_s=args.min_age, force=args.force)
        except UnhealthyStoreError as exc:
            error_line(exc)
            return EXIT_UNHEALTHY
        print(json.dumps({"project": str(store.root), "removed": len(removed),
                          "files": [p.relative_to(store.root).as_posix() for p in removed]}))
    return 0


def _export(args: argparse.Namespace) -> int:
    from napari_lesion_diffkd.core.store import ProjectStore, export_labels

    with ProjectStore(args.project) as store:
        count = export_labels(store, args.out, which=args.which, images=args.images,
                              binary=not args.label_ids, overwrite=args.overwrite)
    print(json.dumps({"exported": count, "out": os.path.abspath(args.out)}))
    return 0


def _replay(args: argparse.Namespace) -> int:
    from napari_lesion_diffkd.core.store import ProjectStore, StoreError
    from napari_lesion_diffkd.core.store.replay import replay_label

    with ProjectStore(args.project) as store:
        image: int | str = args.image  # a name; an id when no image has that name
        try:
            store.image(image)
        except StoreError:
            if not args.image.isdigit():
                raise
            image = int(args.image)
        result = replay_label(store, image, args.version)
    print(json.dumps(result.to_dict()))
    return 0 if result.different == 0 else EXIT_DIFFERENT


_EFFORT_COLUMNS = ("image", "prompts", "strokes", "accepts", "undos", "redos", "model_calls",
                   "model_seconds", "reviews", "saves", "seconds")


def _effort(args: argparse.Namespace) -> int:
    from napari_lesion_diffkd.core.store import ProjectStore
    from napari_lesion_diffkd.core.store.replay import effort

    with ProjectStore(args.project) as store:
        rows = effort(store)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    if not rows:
        print("no interactions logged in this project")
        return 0
    print("\t".join(_EFFORT_COLUMNS))
    for row in rows:
        print("\t".join(str(row[c]) for c in _EFFORT_COLUMNS))
    total = {c: sum(row[c] for row in rows) for c in _EFFORT_COLUMNS[1:]}
    print("\t".join([f"total ({len(rows)} images)"]
                    + [str(round(total[c], 3)) for c in _EFFORT_COLUMNS[1:]]))
    return 0
