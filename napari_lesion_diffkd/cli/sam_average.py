"""``lesion-diffkd sam-average``: one SAM bundle from the weighted mean of several.

    lesion-diffkd sam-average runs/lesion-sam-tiny-2 runs/lesion-sam-tiny-3 \\
        --out runs/lesion-sam-tiny-soup [--weights 0.5 0.5] [--test-time-flip]

The bundles must come from one lineage (same architecture and validation split; see
``core/sam/weight_average.py``). Prints one JSON line with the output folder; exit 2 with a
message when a bundle is missing, unreadable or not averageable.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sam-average",
                       help="average the weights of SAM bundles from one training lineage")
    p.add_argument("bundles", nargs="+", help="SAM bundle folders (two or more)")
    p.add_argument("--out", required=True, help="output bundle folder")
    p.add_argument("--weights", type=float, nargs="+", default=None,
                   help="one weight per bundle (normalised); default equal")
    p.add_argument("--name", default=None, help="the new bundle's name (default: the first's)")
    p.add_argument("--test-time-flip", action="store_true",
                   help="mark the bundle to be prompted with the test-time flip "
                        "(PromptSession averages the mirrored image's answer)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from napari_lesion_diffkd.core.bundle import BundleError
    from napari_lesion_diffkd.core.sam.weight_average import average_sam_bundles

    updates = {"test_time_flip": True} if args.test_time_flip else {}
    command = "lesion-diffkd " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        out = average_sam_bundles(args.bundles, args.out, weights=args.weights, name=args.name,
                                  config_updates=updates, command=command)
    except (BundleError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(out), "bundles": args.bundles}))
    return 0
