"""Share of drawings with ink in the outer 2-px ring: prior samples against real images.

Samples ``--new-concepts`` types from the library's prior with ``--exemplars`` tokens each (the
images of ``conceptlearn sample --new-concepts N --exemplars M``; the noise-free first column is
not counted), binarised at ink probability 1/2, kept inside the canvas (the default) and, with
``--also-anywhere``, from the untruncated prior too; with ``--real N``, the same share over N
real images of ``--real-split`` (evenly spaced in name order).

    CONCEPTLEARN_DATA=/work/shared/omniglot python scripts/border_ink.py \\
        --new-concepts 100 --exemplars 9 --also-anywhere --real 2000 --real-split background --out results/border_ink.json
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from conceptlearn.model.sample import border_ink_share, sample_images
from conceptlearn.shipped import resolve_library


def real_share(n: int, split: str, root=None) -> float:
    """Border share of ``n`` images of ``split``, evenly spaced in name order."""
    from conceptlearn.datasets.omniglot import OmniglotImages

    images = OmniglotImages(split, root)
    keys = [k for a in images.alphabets for c in images.characters(a) for k in images.keys(a, c)]
    keys = keys[:: max(len(keys) // n, 1)][:n]
    return border_ink_share(np.stack([images.image(k) for k in keys]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", default=None, help="library .npz (default: shipped small1)")
    parser.add_argument("--new-concepts", type=int, default=100)
    parser.add_argument("--exemplars", type=int, default=9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--also-anywhere", action="store_true", help="also the untruncated prior")
    parser.add_argument("--real", type=int, default=0, help="also N real images (evenly spaced)")
    parser.add_argument("--real-split", default="evaluation", help="split of the real images")
    parser.add_argument("--data", default=None, help="Omniglot folder (default $CONCEPTLEARN_DATA)")
    parser.add_argument("--out", required=True, help="results JSON")
    args = parser.parse_args(argv)

    library = resolve_library(args.library)
    out = {
        "library": args.library or "shipped small1",
        "seed": args.seed,
        "n_samples": args.new_concepts * args.exemplars,
        "ring_px": 2,
        "threshold": 0.5,
    }
    for name, in_canvas in (("in_canvas", True), ("anywhere", False)):
        if not in_canvas and not args.also_anywhere:
            continue
        start = time.perf_counter()
        images = np.asarray(
            sample_images(
                library,
                jax.random.key(args.seed),
                args.new_concepts,
                args.exemplars,
                in_canvas=in_canvas,
            )
        )[:, 1:]
        out[name] = {
            "border_share": border_ink_share(images),
            "blank_share": float(np.mean(~np.any(images > 0.5, axis=(-2, -1)))),
            "seconds": round(time.perf_counter() - start, 2),
        }
    if args.real:
        share = real_share(args.real, args.real_split, args.data)
        out["real"] = {"split": args.real_split, "n_images": args.real, "border_share": share}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
