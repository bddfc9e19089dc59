"""How the background drawers of a character differ by a global linear map: the robust sds of
rotation, shear and log scale (:func:`conceptlearn.model.learn.drawer_affine_sd`), next to the
token prior's values.

    CONCEPTLEARN_DATA=/work/shared/omniglot python scripts/drawer_affine.py --background small1 \\
        --out results/drawer_affine_small1.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from conceptlearn.datasets.omniglot import OmniglotStrokes
from conceptlearn.inference.config import FULL
from conceptlearn.model.learn import collect_drawings, drawer_affine_sd


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--background", nargs="+", default=["small1"],
                        help="stroke splits (small1, small2, background)")
    parser.add_argument("--data", default=None, help="Omniglot folder (default: CONCEPTLEARN_DATA)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    drawings, stats = collect_drawings([OmniglotStrokes(b, args.data) for b in args.background])
    result = {
        "background": args.background,
        **drawer_affine_sd(drawings),
        "token_prior": {"rotate_sigma": FULL.rotate_sigma, "shear_sigma": FULL.shear_sigma},
        "n_drawings_collected": stats["n_drawings"],
    }
    text = json.dumps(result, indent=1)
    Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
