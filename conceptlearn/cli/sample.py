"""``conceptlearn sample``: new character types from the prior and exemplars of each, as a grid
(:mod:`conceptlearn.model.sample`)."""

from __future__ import annotations

import argparse

import jax
import numpy as np

from conceptlearn.model.sample import sample_images, save_grid
from conceptlearn.shipped import resolve_library


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--library", default=None, help="library .npz from `conceptlearn learn` (default: shipped)"
    )
    parser.add_argument("--new-concepts", type=int, default=8, help="number of new types (rows)")
    parser.add_argument("--exemplars", type=int, default=6, help="tokens per type (columns)")
    parser.add_argument("--out", required=True, help="grid image to write (.png)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blur", type=float, default=0.5, help="display blur sigma (pixels)")
    parser.add_argument(
        "--anywhere",
        action="store_true",
        help="draw from the untruncated prior (default: types and tokens kept inside the canvas)",
    )


def run(args: argparse.Namespace) -> int:
    if args.new_concepts < 1 or args.exemplars < 1:
        raise SystemExit("--new-concepts and --exemplars must be at least 1")
    library = resolve_library(args.library)
    images = sample_images(
        library,
        jax.random.key(args.seed),
        args.new_concepts,
        args.exemplars,
        args.blur,
        in_canvas=not args.anywhere,
    )
    save_grid(np.asarray(images), args.out)
    print(f"wrote {args.out}: {args.new_concepts} concepts x (1 + {args.exemplars}) drawings")
    return 0
