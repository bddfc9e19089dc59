"""Fit the ink model to Omniglot and measure it: render real strokes, binarise, compare.

Fit (small1): the coordinate offset between strokes and pixels (half-pixel grid: a convention
check), then the line half-width (hence ``gain``) and the splat ``spread`` that maximise the mean
IoU of ``render(strokes) > 1/2`` with the real image (the softest spread within 0.005 IoU of the
best, for smoother gradients). Report (held out): the same comparison on every small2 character that is not in
small1 (Japanese_(katakana), Sanskrit, Tagalog; all 20 drawers), with the precision (share of
rendered ink on real ink) and recall.

    CONCEPTLEARN_DATA=/work/shared/omniglot python scripts/render_iou.py --out results/render_iou.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from conceptlearn.datasets.omniglot import OmniglotImages, OmniglotStrokes
from conceptlearn.model.render import DEFAULT_INK, InkParams, ink_density, pad_strokes, render
from conceptlearn.model.splines import resample_stroke

LN2 = math.log(2.0)
SPREAD_TOLERANCE = 0.005  # IoU given up for a softer edge


def gain_for_half_width(spread: float, half_width: float) -> float:
    """The gain at which a long straight line binarises (ink > 1/2) to ``half_width`` px."""
    peak = math.exp(-0.5 * (half_width / spread) ** 2) / (math.sqrt(2.0 * math.pi) * spread)
    return LN2 / peak


def half_width(ink: InkParams) -> float:
    """Inverse of ``gain_for_half_width``."""
    s, g = float(ink.spread), float(ink.gain)
    return s * math.sqrt(max(2.0 * math.log(g / (LN2 * math.sqrt(2.0 * math.pi) * s)), 0.0))


def load(split: str, root, characters, drawers, spacing: float):
    """Real drawings as ``(images bool (n, 105, 105), [stroke lists of (m, 2)], keys)``."""
    images, strokes = OmniglotImages(split, root), OmniglotStrokes(split, root)
    keys = [k for a, c in characters for d, k in enumerate(images.keys(a, c), 1) if d in drawers]
    drawn = [[resample_stroke(s, spacing) for s in strokes.strokes(k)] for k in keys]
    return images.images(keys), drawn, keys


def batches(drawn, batch: int = 64, quantum: int = 64):
    """Yield ``(index array, points f32 (b, S, P, 2), mask)`` with drawings grouped by size."""
    order = sorted(range(len(drawn)), key=lambda i: (len(drawn[i]), max(map(len, drawn[i]))))
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        n_s = max(len(drawn[i]) for i in idx)
        n_p = quantum * math.ceil(max(len(s) for i in idx for s in drawn[i]) / quantum)
        packed = [pad_strokes(drawn[i], n_s, n_p) for i in idx]
        yield np.array(idx), np.stack([p for p, _ in packed]), np.stack([m for _, m in packed])


@jax.jit
def _scores(rendered: jax.Array, real: jax.Array):
    """Per image IoU, precision, recall of bool ``(..., 105, 105)`` masks."""
    inter = jnp.sum(rendered & real, axis=(-2, -1))
    union = jnp.sum(rendered | real, axis=(-2, -1))
    n_r, n_i = jnp.sum(rendered, axis=(-2, -1)), jnp.sum(real, axis=(-2, -1))
    return inter / jnp.maximum(union, 1), inter / jnp.maximum(n_r, 1), inter / jnp.maximum(n_i, 1)


_density = jax.jit(
    jax.vmap(ink_density, in_axes=(0, 0, None, None)), static_argnames=("n_samples",)
)


def sweep(images, drawn, offset, spread, widths, n_samples):
    """Mean IoU ``(len(widths),)`` of binarised renders for each line half-width."""
    thresholds = jnp.asarray([LN2 / gain_for_half_width(spread, h) for h in widths])
    ious = np.zeros((len(widths), len(drawn)))
    for idx, points, mask in batches(drawn):
        dens = _density(jnp.asarray(points + np.float32(offset)), mask, spread, n_samples)
        rendered = dens[None] > thresholds[:, None, None, None]
        ious[:, idx] = np.asarray(_scores(rendered, jnp.asarray(images[idx])[None])[0])
    return ious.mean(axis=1)


_render = jax.jit(jax.vmap(render, in_axes=(0, 0, None, None)), static_argnames=("n_samples",))


def evaluate(images, drawn, offset, ink, n_samples):
    """Per image ``(iou, precision, recall)`` arrays of ``render > 1/2`` against the images."""
    out = np.zeros((3, len(drawn)))
    for idx, points, mask in batches(drawn):
        shifted = jnp.asarray(points + np.float32(offset))
        rendered = _render(shifted, mask, ink, n_samples) > 0.5
        out[:, idx] = np.stack([np.asarray(s) for s in _scores(rendered, images[idx])])
    return out


def summary(scores: np.ndarray) -> dict:
    iou, precision, recall = scores
    return {
        "n_images": int(len(iou)),
        "mean_iou": float(iou.mean()),
        "median_iou": float(np.median(iou)),
        "iou_p10": float(np.percentile(iou, 10)),
        "mean_precision": float(precision.mean()),
        "mean_recall": float(recall.mean()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=None, help="Omniglot folder (default $CONCEPTLEARN_DATA)")
    parser.add_argument("--out", type=Path, default=Path("results/render_iou.json"))
    parser.add_argument("--fit-drawers", type=int, default=4, help="small1 drawers used to fit")
    parser.add_argument("--n-samples", type=int, default=256, help="arc samples per stroke")
    parser.add_argument("--spacing", type=float, default=1.0, help="stroke resampling (px)")
    parser.add_argument("--quick", action="store_true", help="tiny subsets (smoke test)")
    parser.add_argument(
        "--eval-only", action="store_true", help="skip the fit: held-out scores of DEFAULT_INK"
    )
    args = parser.parse_args(argv)
    t0 = time.time()
    report: dict = {"command": "python scripts/render_iou.py " + " ".join(argv or [])}

    small1 = OmniglotImages("small1", args.root).all_characters()
    small2 = OmniglotImages("small2", args.root).all_characters()
    held_out = sorted(set(small2) - set(small1))
    if args.quick:
        small1, held_out = small1[::20], held_out[::20]
    report["n_samples"] = args.n_samples
    if args.eval_only:
        images, drawn, _ = load("small2", args.root, held_out, range(1, 21), args.spacing)
        report["held_out_alphabets"] = sorted({a for a, _ in held_out})
        report["default_ink"] = DEFAULT_INK._asdict()
        scores = evaluate(images, drawn, (0.0, 0.0), DEFAULT_INK, args.n_samples)
        report["held_out"] = summary(scores)
        print("held_out", report["held_out"], flush=True)
        return _write(report, args.out, t0)
    fit_drawers = range(1, args.fit_drawers + 1)
    images, drawn, _ = load("small1", args.root, small1, fit_drawers, args.spacing)
    report["fit_set"] = {"split": "small1", "drawers": list(fit_drawers), "n_images": len(drawn)}
    widths = np.round(np.arange(1.0, 3.51, 0.05), 3)

    # 1. Coordinate offset (half-pixel grid), with a fixed spread.
    offsets = {}
    for dx, dy in itertools.product([-1.0, -0.5, 0.0, 0.5, 1.0], repeat=2):
        ious = sweep(images, drawn, (dx, dy), 1.0, widths, args.n_samples)
        offsets[(dx, dy)] = (float(ious.max()), float(widths[ious.argmax()]))
        print(f"offset ({dx:+.1f}, {dy:+.1f}): IoU {ious.max():.4f}", flush=True)
    best_offset = max(offsets, key=lambda o: offsets[o][0])
    report["offset_search"] = [
        {"offset": list(o), "best_iou": v[0], "half_width": v[1]} for o, v in offsets.items()
    ]
    report["offset"] = list(best_offset)
    print("best offset", best_offset, offsets[best_offset], flush=True)

    # 2. Spread and line width.
    spreads = {}
    for spread in [0.5, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0]:
        ious = sweep(images, drawn, best_offset, spread, widths, args.n_samples)
        spreads[spread] = (float(ious.max()), float(widths[ious.argmax()]))
        print(f"spread {spread}: IoU {ious.max():.4f} at half-width {spreads[spread][1]}")
    # The softest ink within SPREAD_TOLERANCE of the best IoU: smoother gradients, same fit.
    top = max(v[0] for v in spreads.values())
    spread = max(s for s, v in spreads.items() if v[0] >= top - SPREAD_TOLERANCE)
    ink = InkParams(spread=spread, gain=round(gain_for_half_width(spread, spreads[spread][1]), 3))
    report["spread_search"] = [
        {"spread": s, "best_iou": v[0], "half_width": v[1]} for s, v in spreads.items()
    ]
    report["fitted_ink"] = ink._asdict() | {"half_width": half_width(ink)}
    report["default_ink"] = DEFAULT_INK._asdict()
    report["fit"] = summary(evaluate(images, drawn, best_offset, ink, args.n_samples))
    print("fitted", ink, report["fit"], flush=True)

    # 3. Held out: small2 characters not in small1, all drawers.
    images, drawn, _ = load("small2", args.root, held_out, range(1, 21), args.spacing)
    report["held_out_alphabets"] = sorted({a for a, _ in held_out})
    runs = [("held_out", ink, best_offset)]
    if best_offset != (0.0, 0.0):
        runs.append(("held_out_no_offset", ink, (0.0, 0.0)))
    for name, params, offset in runs:
        report[name] = summary(evaluate(images, drawn, offset, params, args.n_samples))
        print(name, report[name], flush=True)
    return _write(report, args.out, t0)


def _write(report: dict, out: Path, t0: float) -> int:
    report["seconds"] = time.time() - t0
    report["devices"] = [str(d) for d in jax.devices()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print("wrote", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
