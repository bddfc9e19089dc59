"""``conceptlearn parse IMAGE --out parse.png``: the best parses of one image, drawn and as JSON.

Each panel shows one of the K best parses over the (faded) image: strokes in drawing order
(colour by order, a number at each stroke's start, an arrow at its end) and the parse's
posterior weight. The JSON (``--json``, default: ``--out`` with ``.json``) holds, per parse,
its weight, log score and strokes as lists of ``[col, row]`` points.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from conceptlearn.inference.fit import Parse

COLOURS = [
    "tab:red",
    "tab:blue",
    "tab:green",
    "tab:orange",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
]


def parse_to_json(parse: Parse) -> list[dict]:
    """The valid parses of one image as JSON-ready dicts (strokes as ``[[col, row], ...]``)."""
    out = []
    for k in range(parse.points.shape[0]):
        if not np.isfinite(float(parse.log_post[k])):
            continue
        strokes = [
            np.asarray(parse.points[k, s])[np.asarray(parse.mask[k, s])].round(2).tolist()
            for s in range(parse.points.shape[1])
            if bool(parse.mask[k, s].any())
        ]
        out.append(
            {
                "weight": float(np.exp(parse.log_weight[k])),
                "log_score": float(parse.log_post[k]),
                "strokes": strokes,
            }
        )
    return out


def draw_parses(image: np.ndarray, parse: Parse, path: str | Path, title: str = "") -> None:
    """Save a figure of ``image bool (105, 105)`` with each valid parse's strokes over it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parses = parse_to_json(parse)
    n = max(len(parses), 1)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.9), squeeze=False)
    for ax, p in zip(axes[0], parses or [None], strict=True):
        ax.imshow(~np.asarray(image, bool), cmap="gray", vmin=0, vmax=1, alpha=0.35)
        ax.set_xticks([])
        ax.set_yticks([])
        if p is None:
            continue
        for i, stroke in enumerate(p["strokes"]):
            xy = np.asarray(stroke)
            colour = COLOURS[i % len(COLOURS)]
            ax.plot(xy[:, 0], xy[:, 1], "-", color=colour, lw=2)
            if len(xy) > 1:
                ax.annotate(
                    "", xy=xy[-1], xytext=xy[-2], arrowprops={"arrowstyle": "->", "color": colour}
                )
            ax.text(xy[0, 0], xy[0, 1], str(i + 1), color=colour, fontsize=9, weight="bold")
        ax.set_title(f"w={p['weight']:.2f}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="PNG image of one character (black ink on white)")
    parser.add_argument("--library", default=None, help="generative-model library .npz")
    parser.add_argument("--out", required=True, help="overlay figure to write (.png)")
    parser.add_argument("--json", default=None, help="parse JSON (default: --out with .json)")
    parser.add_argument("--quick", action="store_true", help="the quick preset")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from PIL import Image, UnidentifiedImageError

    from conceptlearn.inference.classify import FULL, QUICK, as_image
    from conceptlearn.inference.fit import parse_image

    path = Path(args.image)
    try:
        with Image.open(path) as im:
            grey = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as err:
        raise SystemExit(f"parse: cannot read image {path}: {err}") from err
    if args.library is not None and not Path(args.library).is_file():
        raise SystemExit(f"parse: --library {args.library} does not exist")
    image = as_image(grey < 0.5)
    cfg = QUICK if args.quick else FULL
    parse = parse_image(image, cfg, seed=args.seed)
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
