"""How much the pen differs between the drawers of one character: the within-character sd of
the log line width of a background split's images.

The line width of an image is ``2 / (1 - s)`` px, with ``s`` its
:func:`conceptlearn.model.generate.line_core_share` (the share of ink pixels whose 3 x 3
neighbourhood is all ink; a straight line ``w`` px wide keeps about ``(w - 2) / w``). The
within-character sd is the pooled sd of each drawing's log width about its character's mean
(``ddof`` one per character); the robust figure is 1.4826 times the median absolute deviation.
New exemplars spread their pen by it (``FitConfig.pen_sigma``).

    CONCEPTLEARN_DATA=/work/shared/omniglot python scripts/pen_spread.py --background small1 \\
        --out results/pen_spread_small1.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def log_line_widths(images: np.ndarray) -> np.ndarray:
    """``images bool (..., 105, 105)`` -> log line widths ``f64 (...)``."""
    from conceptlearn.model.generate import line_core_share

    flat = jnp.asarray(images.reshape(-1, *images.shape[-2:]))
    share = np.asarray(jax.jit(jax.vmap(line_core_share))(flat), np.float64)
    return np.log(2.0 / np.clip(1.0 - share, 1e-3, None)).reshape(images.shape[:-2])


def within_sd(log_widths: np.ndarray) -> tuple[float, float]:
    """``(pooled sd, robust sd)`` of ``log_widths (n_characters, n_drawers)`` about each
    character's mean."""
    n, m = log_widths.shape
    dev = log_widths - log_widths.mean(1, keepdims=True)
    pooled = float(np.sqrt(np.sum(dev**2) / (n * (m - 1))))
    return pooled, float(1.4826 * np.median(np.abs(dev)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--background", default="small1", help="image split (default small1)")
    parser.add_argument("--data", default=None, help="Omniglot folder (default: the data root)")
    parser.add_argument("--out", required=True, help="results JSON")
    args = parser.parse_args(argv)

    from conceptlearn.datasets.omniglot import OmniglotImages

    images, characters = OmniglotImages(args.background, args.data).character_array()
    widths = log_line_widths(images)
    pooled, robust = within_sd(widths)
    out = {
        "background": args.background,
        "characters": len(characters),
        "drawings": int(widths.size),
        "mean_log_width": round(float(widths.mean()), 4),
        "within_character_sd": round(pooled, 4),
        "within_character_robust_sd": round(robust, 4),
        "between_all_sd": round(float(widths.std()), 4),
    }
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
