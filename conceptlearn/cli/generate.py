"""``conceptlearn generate``: new exemplars of characters shown in images, or new characters in
the style of an alphabet, as a grid (:func:`conceptlearn.concept.generate`,
:func:`conceptlearn.concept.generate_in_style`).

- ``--from IMAGE [--from IMAGE ...] --exemplars N --out grid.png``: one row per image, the image
  in the first column and ``N`` new exemplars after it;
- ``--alphabet-from DIR --new-concepts N --out grid.png``: the first row shows the alphabet's
  characters (the PNGs in ``DIR``, at most ``--max-characters``), the rows after it ``N`` new
  characters sampled from the library re-fitted to their parses.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

COLUMNS = 10  # new characters per row of an --alphabet-from grid


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--from",
        dest="images",
        action="append",
        metavar="IMAGE",
        help="a PNG of one character (black ink on white); repeat for more rows",
    )
    source.add_argument(
        "--alphabet-from", metavar="DIR", help="a folder of PNGs: characters of one alphabet"
    )
    parser.add_argument("--exemplars", type=int, default=9, help="new exemplars per image")
    parser.add_argument(
        "--new-concepts", type=int, default=20, help="new characters (--alphabet-from)"
    )
    parser.add_argument("--max-characters", type=int, default=10, help="characters parsed from DIR")
    parser.add_argument("--out", required=True, help="grid image to write (.png)")
    parser.add_argument("--library", default=None, help="library .npz (default: shipped small1)")
    parser.add_argument("--quick", action="store_true", help="the QUICK parse preset")
    parser.add_argument("--seed", type=int, default=0)


def _read(paths: list[str]) -> np.ndarray:
    from conceptlearn.datasets.episodes import FileImages

    return np.stack([FileImages().image(p) for p in paths])


def run(args: argparse.Namespace) -> int:
    from conceptlearn.concept import generate, generate_in_style
    from conceptlearn.model.sample import save_grid

    start = time.perf_counter()
    if args.images:
        if args.exemplars < 1:
            raise SystemExit("--exemplars must be at least 1")
        support = _read(args.images)
        new = generate(
            support[:, None], args.exemplars, seed=args.seed, quick=args.quick, library=args.library
        )
        grid = np.concatenate([support[:, None].astype(np.float32), new], axis=1)
        what = f"{len(support)} characters x (1 + {args.exemplars}) drawings"
    else:
        if args.new_concepts < 1:
            raise SystemExit("--new-concepts must be at least 1")
        paths = sorted(Path(args.alphabet_from).glob("*.png"))[: args.max_characters]
        if not paths:
            raise SystemExit(f"--alphabet-from: no PNG files in {args.alphabet_from}")
        shown = _read([str(p) for p in paths]).astype(np.float32)
        new = generate_in_style(
            shown, args.new_concepts, seed=args.seed, quick=args.quick, library=args.library
        )
        cols = max(COLUMNS, len(shown))
        rows = [np.zeros((cols, *shown.shape[1:]), np.float32)]
        rows[0][: len(shown)] = shown
        padded = np.zeros((-(-len(new) // cols) * cols, *new.shape[1:]), np.float32)
        padded[: len(new)] = new
        grid = np.concatenate([rows[0][None], padded.reshape(-1, cols, *new.shape[1:])])
        what = f"{len(shown)} characters of {args.alphabet_from}, then {len(new)} new ones"
    save_grid(grid, args.out)
    print(f"wrote {args.out}: {what} ({time.perf_counter() - start:.1f} s)")
    return 0
