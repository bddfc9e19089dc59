"""``conceptlearn parse IMAGE --out parse.png``: the best parses of one image drawn over it, plus
JSON; ``--errors RESULTS.json`` draws the parses behind a results file's errors instead
(:mod:`conceptlearn.inference.parse`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from conceptlearn.inference.parse import draw_parses, parse_to_json, save_error_overlays


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "image", nargs="?", default=None, help="PNG image of one character (black ink on white)"
    )
    parser.add_argument(
        "--library",
        default=None,
        help="generative-model library .npz (default: the shipped small1 library; "
        "'standin': the stand-in prior)",
    )
    parser.add_argument(
        "--out", required=True, help="overlay figure (.png), or folder with --errors"
    )
    parser.add_argument("--errors", default=None, help="harness results JSON: draw its errors")
    parser.add_argument("--runs", default="dev", help="run set of --errors (k = 1)")
    parser.add_argument("--max-errors", type=int, default=20)
    parser.add_argument("--json", default=None, help="parse JSON (default: --out with .json)")
    parser.add_argument("--quick", action="store_true", help="the quick preset")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from PIL import Image, UnidentifiedImageError

    from conceptlearn.inference.classify import FULL, QUICK, as_image
    from conceptlearn.inference.fit import parse_image
    from conceptlearn.shipped import STANDIN, resolve_library

    if args.library not in (None, STANDIN) and not Path(args.library).is_file():
        raise SystemExit(f"parse: --library {args.library} does not exist")
    library = resolve_library(args.library)
    cfg = QUICK if args.quick else FULL
    if args.errors is not None:
        written = save_error_overlays(
            args.errors, args.runs, args.out, cfg, args.max_errors, library=library
        )
        print(f"wrote {len(written)} overlays to {args.out}")
        return 0
    if args.image is None:
        raise SystemExit("parse: give an IMAGE (or --errors RESULTS.json)")
    path = Path(args.image)
    try:
        with Image.open(path) as im:
            grey = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as err:
        raise SystemExit(f"parse: cannot read image {path}: {err}") from err
    image = as_image(grey < 0.5)
    parse = parse_image(image, cfg, seed=args.seed, library=library)
    draw_parses(image, parse, args.out, title=path.name)
    json_path = Path(args.json) if args.json else Path(args.out).with_suffix(".json")
    payload = {
        "image": str(path),
        "config": dataclasses.asdict(cfg),
        "parses": parse_to_json(parse),
    }
    json_path.write_text(json.dumps(payload, indent=1))
    print(f"wrote {args.out} and {json_path}")
    return 0
